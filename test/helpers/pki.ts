// A throwaway certificate authority for TLS tests: CA, server and client certificates made at
// test time (keys by node:crypto, X.509 by node-forge), written as PEM files.
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import forge from 'node-forge';

interface Issued {
  cert: forge.pki.Certificate;
  key: forge.pki.rsa.PrivateKey;
}

function rsaKeys(): { privateKey: forge.pki.rsa.PrivateKey; publicKey: forge.pki.rsa.PublicKey } {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const pem = privateKey.export({ type: 'pkcs1', format: 'pem' }).toString();
  const key = forge.pki.privateKeyFromPem(pem);
  return { privateKey: key, publicKey: forge.pki.setRsaPublicKey(key.n, key.e) };
}

function issue(commonName: string, issuer: Issued | null, extensions: object[]): Issued {
  const keys = rsaKeys();
  const cert = forge.pki.createCertificate();
  cert.publicKey = keys.publicKey;
  cert.serialNumber = '01' + randomBytes(8).toString('hex');
  cert.validity.notBefore = new Date(Date.now() - 60_000);
  cert.validity.notAfter = new Date(Date.now() + 24 * 3600_000);
  const subject = [{ name: 'commonName', value: commonName }];
  cert.setSubject(subject);
  cert.setIssuer(issuer ? issuer.cert.subject.attributes : subject);
  cert.setExtensions(extensions);
  cert.sign(issuer ? issuer.key : keys.privateKey, forge.md.sha256.create());
  return { cert, key: keys.privateKey };
}

export interface Pki {
  readonly ca: string;
  readonly serverCert: string;
  readonly serverKey: string;
  readonly clientCert: string;
  readonly clientKey: string;
  /** A second CA that signed nothing here: trusting it must not validate our server. */
  readonly otherCa: string;
}

export function makePki(dir: string): Pki {
  const ca = issue('Cairn Test CA', null, [{ name: 'basicConstraints', cA: true }, { name: 'keyUsage', keyCertSign: true, cRLSign: true }]);
  const other = issue('Other CA', null, [{ name: 'basicConstraints', cA: true }, { name: 'keyUsage', keyCertSign: true, cRLSign: true }]);
  const server = issue('localhost', ca, [
    { name: 'basicConstraints', cA: false },
    { name: 'extKeyUsage', serverAuth: true },
    { name: 'subjectAltName', altNames: [{ type: 2, value: 'localhost' }, { type: 7, ip: '127.0.0.1' }] },
  ]);
  const client = issue('cairn-client', ca, [{ name: 'basicConstraints', cA: false }, { name: 'extKeyUsage', clientAuth: true }]);
  const write = (name: string, pem: string): string => {
    const path = join(dir, name);
    writeFileSync(path, pem, { mode: 0o600 });
    return path;
  };
  return {
    ca: write('ca.pem', forge.pki.certificateToPem(ca.cert)),
    otherCa: write('other-ca.pem', forge.pki.certificateToPem(other.cert)),
    serverCert: write('server.pem', forge.pki.certificateToPem(server.cert)),
    serverKey: write('server-key.pem', forge.pki.privateKeyToPem(server.key)),
    clientCert: write('client.pem', forge.pki.certificateToPem(client.cert)),
    clientKey: write('client-key.pem', forge.pki.privateKeyToPem(client.key)),
  };
}

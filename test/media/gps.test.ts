// Who sees GPS: the owner (a principal of the tenant who may write, not acting through a share);
// never readers, nor anyone reaching the file through another tenant's share.
import test from 'ava';
import { mayseeGps, redact } from '../../src/media/serve.js';
import type { MediaRecord } from '../../src/media/index.js';

const record: MediaRecord = { v: 1, state: 'ready', type: 'image/jpeg', width: 10, height: 10, gps: { latitude: 1, longitude: 2 }, exif: { make: 'X' } };

test('GPS is shown to owners only', (t) => {
  const owner = { tenant: 'default', role: 'user', subject: 'alice' } as const;
  const admin = { tenant: 'default', role: 'admin', subject: 'admin@default' } as const;
  const reader = { tenant: 'default', role: 'reader', subject: 'bob' } as const;
  // What the gateway's share guard hands a handler for a grantee of another tenant.
  const grantee = { tenant: 'default', role: 'user', subject: 'carol@other' } as const;
  t.true(mayseeGps(owner, false));
  t.true(mayseeGps(admin, false));
  t.false(mayseeGps(reader, false));
  // The handler knows a call came through a share from the guard (actingOf), whatever the role.
  t.false(mayseeGps(grantee, true));
  t.deepEqual(redact(record, owner).gps, { latitude: 1, longitude: 2 });
  t.is(redact(record, reader).gps, undefined);
  t.is(redact(record, grantee, true).gps, undefined);
  t.is(redact(record, reader).exif?.make, 'X', 'the rest stays');
});

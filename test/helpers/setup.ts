// Loaded by AVA before every test file (package.json "ava.require"). fast-check 4 keeps a failed
// property's own error in `cause`, which AVA does not print: put it in the report's message so a
// failure seen once in CI says what failed.
import fc from 'fast-check';

fc.configureGlobal({ ...fc.readConfigureGlobal(), includeErrorInReport: true });

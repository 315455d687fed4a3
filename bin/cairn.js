#!/usr/bin/env node
// The `cairn` binary: runs the compiled CLI (built by `npm run build`, which `npm ci` runs via `prepare`).
import '../dist/cli/run.js';

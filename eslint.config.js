// Flat ESLint config: type-aware typescript-eslint rules over src, test, bench and scripts,
// plus the architecture's import boundaries (DESIGN.md "Layout").
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

const NODE_BUILTINS = ['fs', 'fs/promises', 'path', 'os', 'crypto', 'http', 'https', 'http2', 'net', 'child_process', 'stream', 'stream/promises', 'util', 'events', 'url', 'zlib', 'worker_threads', 'assert', 'tls', 'dns', 'readline', 'process', 'buffer', 'timers', 'timers/promises', 'perf_hooks'];
const nodePrefix = { group: NODE_BUILTINS, message: 'Use the node: prefix for built-in modules.' };
const COMPONENTS = ['blocknode', 'metadata', 'gateway', 'media', 'operator', 'server', 'cli'];

/** no-restricted-imports with the node: rule plus the given boundary patterns. */
function restrict(...patterns) {
  return { 'no-restricted-imports': ['error', { patterns: [nodePrefix, ...patterns] }] };
}

/** A component may use another only through its index.ts. */
function onlyIndexOf(others) {
  return others.map((c) => ({
    group: [`**/${c}/*`, `!**/${c}/index.js`],
    message: `Import ${c} through its index.ts, not its internals.`,
  }));
}

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'src/gen/**', 'data/**', 'coverage/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/consistent-type-imports': ['error', { fixStyle: 'inline-type-imports' }],
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/no-explicit-any': 'error',
      '@typescript-eslint/require-await': 'off',
      '@typescript-eslint/restrict-template-expressions': ['error', { allowNumber: true, allowBoolean: true }],
      ...restrict(),
    },
  },
  // Components reach each other only through index.ts.
  ...COMPONENTS.map((c) => ({
    files: [`src/${c}/**/*.ts`],
    rules: restrict(...onlyIndexOf(COMPONENTS.filter((o) => o !== c))),
  })),
  {
    files: ['src/common/**/*.ts'],
    rules: restrict({ group: COMPONENTS.map((c) => `**/${c}/**`).concat(['**/client/**']), message: 'src/common knows no component.' }),
  },
  {
    files: ['src/client/**/*.ts'],
    rules: restrict({ group: COMPONENTS.filter((c) => c !== 'cli').map((c) => `**/${c}/**`), message: 'The SDK ships to users: no server code.' }),
  },
  {
    files: ['src/sync/**/*.ts'],
    rules: restrict(
      { group: COMPONENTS.map((c) => `**/${c}/**`), message: 'The sync client ships to users: no server code.' },
      { group: ['**/client/*', '!**/client/index.js'], message: 'Use the SDK through src/client/index.ts.' },
    ),
  },
  {
    files: ['src/placement/**/*.ts', 'src/chunking/**/*.ts'],
    rules: restrict({ group: ['node:fs', 'node:fs/*', 'node:net', 'node:http', 'node:http2', 'node:child_process', 'pino', 'prom-client', '**/common/config*', '**/common/log*'], message: 'Pure rooms do no I/O, config or logging.' }),
  },
  {
    files: ['**/*.js', '**/*.mjs'],
    extends: [tseslint.configs.disableTypeChecked],
  },
);

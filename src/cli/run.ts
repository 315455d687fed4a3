// Runs the CLI with this process's arguments (the binary's and the tests' entry point).
import { main } from './main.js';

await main(process.argv);

// Runs the metadata model suite on the PostgreSQL backend (a real embedded server).
import { modelSuite } from './model-suite.js';
import { postgresKvFactory } from './postgres-factory.js';

modelSuite('postgres', postgresKvFactory('model'));

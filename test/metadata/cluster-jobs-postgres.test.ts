// Runs the job-queue and cluster-map suites on the PostgreSQL backend (a real embedded server).
import { clusterSuite } from './cluster-suite.js';
import { jobsSuite } from './jobs-suite.js';
import { postgresKvFactory } from './postgres-factory.js';

const postgres = postgresKvFactory('admin');

jobsSuite('postgres', postgres);
clusterSuite('postgres', postgres);

#!/usr/bin/env node
import '../common/extra-ca-certs.js';
import './v8-flags.js';
import { runCli } from './cli.js';

process.exitCode = await runCli(process.argv.slice(2));

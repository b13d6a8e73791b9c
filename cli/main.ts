#!/usr/bin/env node
import './v8-flags.js';
import { runCli } from './cli.js';

process.exitCode = await runCli(process.argv.slice(2));

#!/usr/bin/env node
// Entry point of the `neural-lineage` command: the bundled CLI, built by `npm run build`.
require('../dist/cli.js');

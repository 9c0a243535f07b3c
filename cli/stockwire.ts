import { runDevices } from './devices.js';

const COMMANDS: Record<string, { summary: string; run: (argv: string[]) => Promise<void> }> = {
  central: {
    summary: 'the central MQTT broker, the stock processor and the HTTP API',
    run: async (a) => (await import('../processors/main.js')).runCentral(a),
  },
  processor: {
    summary: 'the stock processor alone, as an MQTT client of any central broker',
    run: async (a) => (await import('../processors/main.js')).runProcessor(a),
  },
  edge: {
    summary: 'one warehouse: its broker for devices, the durable outbox and the bridge to central',
    run: async (a) => (await import('../gateway/main.js')).runEdge(a),
  },
  sim: {
    summary: 'simulated scanners and shelf sensors publishing to edges (faults, --verify)',
    run: async (a) => (await import('../device-sim/main.js')).runSim(a),
  },
  migrate: {
    summary: 'create or upgrade the database schema, then exit',
    run: async (a) => (await import('../processors/main.js')).runMigrate(a),
  },
  rebuild: {
    summary: 'recompute stock from the event log, report drift, exit 1 on drift',
    run: async (a) => (await import('../processors/main.js')).runRebuild(a),
  },
  replay: {
    summary: 'republish a time range of the event log to a broker for downstream consumers',
    run: async (a) => (await import('../processors/main.js')).runReplay(a),
  },
  demo: {
    summary: 'central + two edges + simulator + live display on one machine, no services needed',
    run: async (a) => (await import('./demo.js')).runDemo(a),
  },
  devices: { summary: 'add a device or gateway credential to a devices file (devices add …)', run: runDevices },
};

function usage(): string {
  const rows = Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(10)} ${c.summary}`);
  return `Usage: stockwire <command> [options]\n\nCommands:\n${rows.join('\n')}\n\nEvery command takes --help.\n`;
}

const [command, ...argv] = process.argv.slice(2);
if (command === undefined || command === '--help' || command === '-h' || command === 'help') {
  process.stdout.write(usage());
} else {
  const entry = COMMANDS[command];
  if (!entry) {
    process.stderr.write(`stockwire: unknown command ${JSON.stringify(command)}\n\n${usage()}`);
    process.exitCode = 2;
  } else {
    entry.run(argv).catch((err: Error) => {
      process.stderr.write(`stockwire ${command}: ${err.message}\n`);
      process.exitCode = 1;
    });
  }
}

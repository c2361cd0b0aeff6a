import { execFileSync } from 'node:child_process';
import { defineConfig } from '@playwright/test';

// A port free right now, unless E2E_PORT names one: a fixed port fails whenever anything else
// on the machine holds it. Chosen once, in the runner; its workers inherit it with the
// environment, so every process agrees on it.
function freePort(): string {
  const probe =
    "const s = require('net').createServer();" +
    "s.listen(0, '127.0.0.1', () => { process.stdout.write(String(s.address().port)); s.close(); });";
  return execFileSync(process.execPath, ['-e', probe], { encoding: 'utf8' }).trim();
}
process.env['E2E_PORT'] ??= freePort();
const PORT = Number(process.env['E2E_PORT']);
// The second server (serve_scripted.py): the real app with a scripted model that searches the
// chat's files and cites what it found. Specs reach it at E2E_SCRIPTED_PORT.
process.env['E2E_SCRIPTED_PORT'] ??= freePort();
const SCRIPTED_PORT = Number(process.env['E2E_SCRIPTED_PORT']);

// Debian's chromium (installed by `make chromium`), never Playwright's download. Playwright
// launches it with a fresh temporary profile (user-data-dir) for every run.
export default defineConfig({
  testDir: './e2e',
  timeout: 60_000,
  expect: { timeout: 15_000 },
  fullyParallel: false,
  workers: 1,
  retries: 0,
  reporter: [['list']],
  use: {
    baseURL: `http://127.0.0.1:${PORT}`,
    browserName: 'chromium',
    headless: true,
    launchOptions: {
      executablePath: process.env['CHROMIUM'] ?? '/usr/bin/chromium',
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    },
    trace: 'off',
  },
  webServer: [
    {
      command: `../.venv/bin/python e2e/serve_tiny.py ${PORT}`,
      url: `http://127.0.0.1:${PORT}/health`,
      timeout: 240_000,
      reuseExistingServer: false,
      stdout: 'ignore',
      stderr: 'pipe',
    },
    {
      command: `../.venv/bin/python e2e/serve_scripted.py ${SCRIPTED_PORT}`,
      url: `http://127.0.0.1:${SCRIPTED_PORT}/health`,
      timeout: 240_000,
      reuseExistingServer: false,
      stdout: 'ignore',
      stderr: 'pipe',
    },
  ],
});

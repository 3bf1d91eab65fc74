// Runs graphql-http's GraphQL-over-HTTP server audits (the spec's MUST/SHOULD/MAY checks)
// against a running catalog-api and prints one line per audit. Exits 1 when an audit ends in
// `warn` or `error`; `notice` results are reported, not failed. With `--json` it prints the
// results as one JSON array instead (tests/api/graphql_http_audit.rs reads that).
//
//   npm ci --prefix scripts/graphql-http
//   node scripts/graphql-http/audit.mjs http://127.0.0.1:8000/graphql [--json]
import { auditServer } from 'graphql-http';

const args = process.argv.slice(2);
const json = args.includes('--json');
const url = args.find((arg) => !arg.startsWith('--'));
if (!url) {
  console.error('usage: node audit.mjs <graphql url> [--json]');
  process.exit(2);
}

const results = await auditServer({ url });
const failed = results.filter((result) => result.status === 'warn' || result.status === 'error');

if (json) {
  const plain = await Promise.all(
    results.map(async (result) => ({
      id: result.id,
      name: result.name,
      status: result.status,
      reason: result.reason ?? null,
      responseStatus: result.response?.status ?? null,
    })),
  );
  console.log(JSON.stringify(plain));
} else {
  for (const result of results) {
    const detail = result.status === 'ok' ? '' : `\n    ${result.reason}`;
    console.log(`${result.status.padEnd(6)} ${result.id} ${result.name}${detail}`);
  }
  const counts = {};
  for (const result of results) counts[result.status] = (counts[result.status] ?? 0) + 1;
  console.log(
    `\n${results.length} audits: ` +
      Object.entries(counts)
        .map(([status, count]) => `${count} ${status}`)
        .join(', '),
  );
}
process.exit(failed.length > 0 ? 1 : 0);

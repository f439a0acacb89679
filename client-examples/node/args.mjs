// Command-line options shared by the examples: --url, --token, --room, --text,
// --mode (graphql-sse) and --count (the following examples: messages to wait for).
import { parseArgs } from 'node:util';

export function options(defaults) {
  const { values } = parseArgs({
    options: {
      url: { type: 'string', default: defaults.url },
      token: { type: 'string', default: process.env.TOKEN },
      room: { type: 'string', default: 'general' },
      text: { type: 'string', default: defaults.text },
      mode: { type: 'string', default: 'distinct' },
      count: { type: 'string', default: '1' },
    },
  });
  if (!values.token) {
    console.error('a token is needed: --token "$TOKEN" (python server.py token alice)');
    process.exit(2);
  }
  return values;
}

// The first error's `extensions.code`, from whatever form a client reports it in.
export function errorCode(err) {
  const errors = Array.isArray(err) ? err : err?.errors ?? err?.graphQLErrors ?? [];
  return errors[0]?.extensions?.code;
}

// An error as a line of text, whatever a client reports it as (an Error,
// GraphQL errors, or a WebSocket CloseEvent once it gives up reconnecting).
export function describe(err) {
  if (err instanceof Error) return err.stack ?? String(err);
  if (err && typeof err === 'object' && 'code' in err) return `closed: ${err.code} ${err.reason ?? ''}`;
  return JSON.stringify(err);
}

// graphql-codegen: TypeScript types for the schema and for every operation
// written in src/ (inside /* GraphQL */ strings), checked against the schema.
// SCHEMA and GENERATED override the paths (the tests use them).
import type { CodegenConfig } from '@graphql-codegen/cli';

const config: CodegenConfig = {
  schema: process.env.SCHEMA ?? '../../../schema/schema.graphql',
  documents: ['src/**/*.ts', '!src/generated/**'],
  generates: {
    [process.env.GENERATED ?? 'src/generated/graphql.ts']: {
      plugins: ['typescript', 'typescript-operations'],
      config: {
        scalars: { DateTime: 'string', JSON: 'unknown', ID: 'string' },
        enumsAsTypes: true,
        avoidOptionals: { field: true, inputValue: false },
        useTypeImports: true,
      },
    },
  },
  noSilentErrors: true,
};

export default config;

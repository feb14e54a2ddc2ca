// Wrong uses of the generated types: `tsc --noEmit` must refuse each (test_codegen.py checks
// the error codes), which proves the check can fail.
import type { CreateServiceMutationVariables, ListServicesQuery } from "./operations";

// TS18047: `url` is nullable in the schema.
export function urlLengths(data: ListServicesQuery): number[] {
  return data.services.nodes.map((node) => node.url.length);
}

// TS2741: `name` is required in ServiceInput.
export const nameless: CreateServiceMutationVariables = { input: { url: "http://127.0.0.1:9" } };

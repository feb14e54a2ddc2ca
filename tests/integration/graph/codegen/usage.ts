// Correct uses of the types graphql-codegen generates from the served SDL (test_codegen.py):
// `tsc --noEmit` must accept this file.
import type { CreateServiceMutation, CreateServiceMutationVariables, ListServicesQuery } from "./operations";
import type { Service } from "./schema";

export function serviceNames(data: ListServicesQuery): string[] {
  return data.services.nodes.map((node) => node.name);
}

export function serviceUrls(data: ListServicesQuery): string[] {
  return data.services.nodes.flatMap((node) => (node.url === null ? [] : [node.url]));
}

export function createdId(data: CreateServiceMutation): string | null {
  const result = data.createService;
  return result.__typename === "ServicePayload" ? result.service.id : null;
}

export function summary(service: Pick<Service, "name" | "path">): string {
  return `${service.name} ${service.path}`;
}

export const variables: CreateServiceMutationVariables = {
  input: { name: "billing", url: "http://127.0.0.1:9" },
};

#!/usr/bin/env node
// Checks an A2A Agent Card (the registry's A2A view, registry.md) with the A2A SDK's own types.
//
//   node tests/a2a/validate-card.mjs <card.json>
//
// 1. Round trip (registry.md): `AgentCard.toJSON(AgentCard.fromJSON(card))` deep-equals the card.
//    AgentCard is exported by the package root of @a2a-js/sdk 1.3.0 (dist/index.js): the ts-proto
//    codec generated from the A2A 1.0 a2a.proto (package lf.a2a.v1). The SDK uses the same pair to
//    canonicalise cards before signing them (canonicalizeAgentCard). fromJSON keeps only the
//    fields the spec defines and coerces their types; toJSON drops empty strings, empty lists and
//    false/unset defaults. So the round trip fails on any unknown member, any wrongly typed value
//    and any empty REQUIRED value, and prints where.
// 2. REQUIRED fields: the SDK has no runtime validator for them, so they are checked here as
//    a2a.proto v1.0 marks them (google.api.field_behavior = REQUIRED): AgentCard name, description,
//    supportedInterfaces, version, capabilities, defaultInputModes, defaultOutputModes, skills;
//    AgentInterface url, protocolBinding, protocolVersion; AgentProvider url, organization;
//    AgentSkill id, name, description, tags; HTTPAuthSecurityScheme scheme.
//
// Exit status: 0 valid, 1 invalid (the differences are printed), 2 usage or unreadable input.
import { readFileSync } from "node:fs";
import { isDeepStrictEqual } from "node:util";
import { AgentCard } from "@a2a-js/sdk";

function usage(message) {
  console.error(`validate-card: ${message}\nusage: node validate-card.mjs <agent-card.json>`);
  process.exit(2);
}

const path = process.argv[2];
if (!path || process.argv.length > 3) usage("expected exactly one file path");

let card;
try {
  card = JSON.parse(readFileSync(path, "utf8"));
} catch (error) {
  usage(`cannot read ${path} as JSON: ${error.message}`);
}

const show = (value) => (value === undefined ? "(absent)" : JSON.stringify(value));
const isPlainObject = (value) => value !== null && typeof value === "object" && !Array.isArray(value);

// Every path where `expected` (the card) and `actual` (after the round trip) differ.
function diff(expected, actual, where, out) {
  if (isDeepStrictEqual(expected, actual)) return;
  if (Array.isArray(expected) && Array.isArray(actual)) {
    if (expected.length !== actual.length) {
      out.push(`${where}: ${expected.length} entries in the card, ${actual.length} after the round trip`);
    }
    for (let i = 0; i < Math.min(expected.length, actual.length); ++i) diff(expected[i], actual[i], `${where}[${i}]`, out);
    return;
  }
  if (isPlainObject(expected) && isPlainObject(actual)) {
    for (const key of new Set([...Object.keys(expected), ...Object.keys(actual)])) {
      diff(expected[key], actual[key], `${where}.${key}`, out);
    }
    return;
  }
  out.push(`${where}: card has ${show(expected)}, round trip gives ${show(actual)}`);
}

const problems = [];
if (!isPlainObject(card)) {
  problems.push("$: an Agent Card must be a JSON object");
} else {
  diff(card, AgentCard.toJSON(AgentCard.fromJSON(card)), "$", problems);

  const requireString = (object, key, where) => {
    if (typeof object?.[key] !== "string" || object[key] === "") {
      problems.push(`${where}.${key}: REQUIRED (A2A 1.0), must be a non-empty string`);
    }
  };
  const requireList = (object, key, where) => {
    if (!Array.isArray(object?.[key]) || object[key].length === 0) {
      problems.push(`${where}.${key}: REQUIRED (A2A 1.0), must be a non-empty list`);
      return [];
    }
    return object[key];
  };

  for (const key of ["name", "description", "version"]) requireString(card, key, "$");
  requireList(card, "supportedInterfaces", "$").forEach((entry, i) => {
    for (const key of ["url", "protocolBinding", "protocolVersion"]) requireString(entry, key, `$.supportedInterfaces[${i}]`);
  });
  if (!isPlainObject(card.capabilities)) problems.push("$.capabilities: REQUIRED (A2A 1.0), must be an object");
  requireList(card, "defaultInputModes", "$");
  requireList(card, "defaultOutputModes", "$");
  requireList(card, "skills", "$").forEach((skill, i) => {
    for (const key of ["id", "name", "description"]) requireString(skill, key, `$.skills[${i}]`);
    requireList(skill, "tags", `$.skills[${i}]`);
  });
  if (card.provider !== undefined) {
    for (const key of ["url", "organization"]) requireString(card.provider, key, "$.provider");
  }
  for (const [name, scheme] of Object.entries(isPlainObject(card.securitySchemes) ? card.securitySchemes : {})) {
    if (scheme?.httpAuthSecurityScheme !== undefined) {
      requireString(scheme.httpAuthSecurityScheme, "scheme", `$.securitySchemes.${name}.httpAuthSecurityScheme`);
    }
  }
}

if (problems.length > 0) {
  console.error(`validate-card: ${path} is not a valid A2A 1.0 Agent Card for @a2a-js/sdk:`);
  for (const problem of problems) console.error(`  ${problem}`);
  process.exit(1);
}
console.log(`validate-card: ${path}: AgentCard.toJSON(AgentCard.fromJSON(card)) deep-equals the card; A2A 1.0 REQUIRED fields present`);

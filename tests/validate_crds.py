#!/usr/bin/env python3
"""Validates custom resources against the openAPIV3Schema of their CustomResourceDefinitions.

    validate_crds.py CRD.yaml... < resources.yaml

Every document of the stream whose apiVersion/kind one of the CRDs defines (a served
version) is validated; a document of a kind no CRD defines is an error, so nothing passes
unchecked. Prints one line per resource and exits 1 on any error. Uses PyYAML and
jsonschema (both come with kubernetes-validate).
"""
import sys

import jsonschema
import yaml


def strict(schema):
    """As the API server with strict field validation (kubectl --validate=strict): an
    object schema with properties refuses fields it does not name, unless it preserves
    unknown fields."""
    if isinstance(schema, dict):
        for value in schema.values():
            strict(value)
        if (
            schema.get("type") == "object"
            and "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
    elif isinstance(schema, list):
        for value in schema:
            strict(value)
    return schema


def schemas(paths):
    out = {}
    for path in paths:
        with open(path) as f:
            crd = yaml.safe_load(f)
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if version.get("served"):
                schema = strict(version["schema"]["openAPIV3Schema"])
                # Every object has these, whatever the CRD's schema spells out.
                schema.setdefault("properties", {}).setdefault("metadata", {"type": "object"})
                out[(f"{group}/{version['name']}", kind)] = schema
    return out


def main():
    known = schemas(sys.argv[1:])
    errors = 0
    checked = 0
    for doc in yaml.safe_load_all(sys.stdin):
        if not doc:
            continue
        key = (doc.get("apiVersion"), doc.get("kind"))
        name = f"{key[1]}/{doc.get('metadata', {}).get('name')}"
        if key not in known:
            print(f"{name}: no CRD defines {key[0]} {key[1]}")
            errors += 1
            continue
        problems = sorted(jsonschema.Draft7Validator(known[key]).iter_errors(doc), key=lambda e: list(e.path))
        for p in problems:
            print(f"{name}: {'.'.join(map(str, p.path)) or '(root)'}: {p.message}")
        errors += len(problems)
        checked += 1
        if not problems:
            print(f"{name}: valid against {key[0]}")
    print(f"{checked} resources checked, {errors} errors")
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()

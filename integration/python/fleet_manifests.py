"""Reads the fleet's manifests for integration/tests/fleet.rs, which holds them
to the supervisor, the package and the README.

usage:
  fleet_manifests.py kubernetes VERSION[,VERSION...] FILE
      Validates every object of the YAML stream FILE ("-": stdin) against the
      Kubernetes schemas kubernetes-validate bundles, strictly (an unknown
      field fails), for each VERSION; a ServiceMonitor against
      servicemonitor.schema.json beside this file, whose metadata and label
      selector refer to the same bundled schemas. Prints the objects as one
      JSON array. Exits 1 naming the object, the version and the failure.
  fleet_manifests.py hcl FILE
      Parses the HCL2 file FILE (a Nomad job) with python-hcl2 and prints it
      as JSON: blocks as lists of {label: body}, strings unquoted, heredocs
      as their text with an indented heredoc's indent removed.

Nothing here reaches the network: the schemas are files of the installed
packages (the test runs this in a network namespace of its own to hold it
to that).
"""

import json
import pathlib
import sys

import jsonschema
import referencing
import yaml
from kubernetes_validate import utils as kv

HERE = pathlib.Path(__file__).resolve().parent
SERVICE_MONITOR = ("monitoring.coreos.com/v1", "ServiceMonitor")


def fail(message):
    print(message, file=sys.stderr)
    sys.exit(1)


def bundled_definitions(version):
    """Kubernetes' own definitions for VERSION, as kubernetes-validate picks them."""
    wanted = kv.major_minor(version)
    known = [v for v in kv.all_versions() if kv.major_minor(v) <= wanted]
    if not known:
        fail(f"kubernetes-validate bundles no schemas for {version}")
    path = f"kubernetes-json-schema/v{known[-1]}-local-strict/_definitions.json"
    return kv.schema_contents(path, version)


def validate_service_monitor(obj, version):
    schema = json.loads((HERE / "servicemonitor.schema.json").read_text())
    registry = referencing.Registry().with_resources(
        [
            (schema["$id"], referencing.Resource.from_contents(schema)),
            ("https://kubernetes.io/api/_definitions.json", referencing.Resource.from_contents(bundled_definitions(version))),
        ]
    )
    jsonschema.Draft202012Validator(schema, registry=registry).validate(obj)


def kubernetes(versions, source):
    text = sys.stdin.read() if source == "-" else pathlib.Path(source).read_text()
    objects = [o for o in yaml.safe_load_all(text) if o is not None]
    for obj in objects:
        name = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        for version in versions:
            try:
                if (obj.get("apiVersion"), obj.get("kind")) == SERVICE_MONITOR:
                    validate_service_monitor(obj, version)
                else:
                    kv.validate(obj, version, strict=True)
            except jsonschema.ValidationError as e:
                where = ".".join(str(p) for p in e.absolute_path) or "(the object)"
                fail(f"{source}: {name} is not valid for Kubernetes {version}: at {where}: {e.message}")
            except kv.SchemaNotFoundError as e:
                fail(f"{source}: {name}: {e.message}")
    print(json.dumps(objects))


def dedent_heredoc(raw):
    """`<<-EOT ... EOT` or `<<EOT ... EOT` as HCL reads it: the lines between
    the markers, and for `<<-` without the indent they all share."""
    lines = raw.split("\n")
    opener, body = lines[0], lines[1:-1]
    if opener.startswith("<<-"):
        indents = [len(l) - len(l.lstrip(" ")) for l in body if l.strip()]
        cut = min(indents, default=0)
        body = [l[cut:] for l in body]
    return "\n".join(body) + "\n"


def plain(value):
    """python-hcl2's values made plain: heredocs as their text."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, str) and value.startswith("<<"):
        return dedent_heredoc(value)
    return value


def hcl(source):
    import hcl2
    from hcl2.utils import SerializationOptions

    options = SerializationOptions(
        strip_string_quotes=True, explicit_blocks=False, with_comments=False, preserve_heredocs=True
    )
    with open(source) as f:
        print(json.dumps(plain(hcl2.load(f, serialization_options=options))))


def main(argv):
    if len(argv) == 4 and argv[1] == "kubernetes":
        kubernetes(argv[2].split(","), argv[3])
    elif len(argv) == 3 and argv[1] == "hcl":
        hcl(argv[2])
    else:
        fail(__doc__)


if __name__ == "__main__":
    main(sys.argv)

"""The one way the bench scripts hand over their results: JSON on stdout and, with ``--json PATH``, in a file."""
import json


def write_json(results, json_path):
    """Write ``results`` as indented JSON to ``json_path`` (nothing when it is empty or None)."""
    if json_path:
        with open(json_path, 'w') as f:
            f.write(json.dumps(results, indent=2) + '\n')


def emit(results, json_path):
    """Print ``results`` as indented JSON and write it to ``json_path`` when given; returns ``results``."""
    print(json.dumps(results, indent=2))
    write_json(results, json_path)
    return results

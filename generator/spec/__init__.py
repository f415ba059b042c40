"""The spec stage: YAML files in, validated and resolved specs out.

    project = load_project([Path("specs")], root=Path("."))   # raises SpecError with every problem
    for name in project.order():                               # parents before children
        spec = project.specs[name]                             # ResolvedSpec: .data is merged, defaults filled
        spec.diagnostic(("users", 0, "uid"), "message", "hint") # points at the line that wrote it

Reading keeps every line and column (yamlfile), the JSON Schema judges each file (schema_check),
`extends` chains are merged by the rules in merge.py, and checks.py holds the rules between fields.
"""

from generator.spec.project import Project, load_project
from generator.spec.resolved import ResolvedSpec

__all__ = ["Project", "ResolvedSpec", "load_project"]

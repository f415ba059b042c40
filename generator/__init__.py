"""gen: declarative YAML specs to reproducible, s6-supervised container base images.

Flow is one way: spec -> model -> plan -> render -> build -> verify, one subpackage each.
"""

__version__ = "0.1.0"

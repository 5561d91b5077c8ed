"""Beyond one machine: where embedding, persona and brief writing run.

`executor = "local"` (the default) is this process, as always; `"ray"` runs the embed stage on Ray Data
actors and persona and brief writing as Ray actor calls against one or more OpenAI-compatible endpoints
(ray_llm: the one scheduler both use). Ray is an optional extra (`pip install 'persona-llm[cluster]'`)
imported only when the ray executor is used.
"""

from persona_llm.scale.ray_executor import RayExecutor, import_ray, open_executor
from persona_llm.scale.settings import EXECUTORS, ScaleSettings

__all__ = ["EXECUTORS", "RayExecutor", "ScaleSettings", "import_ray", "open_executor"]

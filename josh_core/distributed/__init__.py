"""Playing runs on more than one process or machine.

`ray_rollout` spreads a run's conversations over a Ray cluster (`josh rollout|eval --ray
[ADDRESS]`); it imports Ray only when used (`pip install -e '.[ray]'`). See docs/distributed.md.
"""


class RayUnavailable(RuntimeError):
    """Ray is not installed, or the cluster cannot be reached or cannot host a worker."""

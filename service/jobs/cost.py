"""What a robustness check would cost, estimated before it is queued.

Every field of a request can be within its own limit while the whole asks for days
of work (every attack, every threat model, many radii, every sample, a huge
``nb_iter``). The estimate here counts model evaluations of one image (a forward
pass, or a forward and backward pass for gradient attacks):

    sum over the units the suite will run (attack x threat model x radius, as
    ``robustness.plan`` plans them, plus the sanity runs)
    of samples x evaluations per sample

where an attack's evaluations per sample is its own ``evaluations_per_sample`` where it
states one (the level-space attacks: PGD runs plus greedy moves), else the product of its
iteration-like parameters (``nb_iter``, ``steps``, ``restarts``, ``target_classes``,
``queries``, ``max_iterations``, ``binary_search_steps``, ``spsa_samples``, ``spsa_iters``,
``num_iterations``, ``max_num_evals``), with the request's overrides applied: an upper bound
for attacks that stop early. The
service refuses a check whose estimate passes ``QUSEC_ROBUSTNESS_MAX_COST`` (422)
and a queue whose waiting and running checks together would pass
``QUSEC_ROBUSTNESS_MAX_QUEUED_COST`` (429).
"""

from __future__ import annotations

import math

from robustness.attacks import Attack, get_attack
from robustness.plan import requested_pairs, sanity_units
from robustness.request import SuiteRequest

_ITERATION_FIELDS = (
    "nb_iter",
    "steps",
    "target_classes",
    "queries",
    "restarts",
    "binary_search_steps",
    "max_iterations",
    "spsa_samples",
    "spsa_iters",
    "num_iterations",
    "max_num_evals",
)


def evaluations_per_sample(attack: Attack) -> int:
    """Model evaluations one crafted example costs at most."""
    stated = getattr(attack, "evaluations_per_sample", None)
    if stated is not None:
        return max(1, int(stated))
    counts = (getattr(attack, name) for name in _ITERATION_FIELDS if hasattr(attack, name))
    return max(1, math.prod(int(count) for count in counts))


def estimate_cost(request: SuiteRequest, quantized: bool = True) -> int:
    """Model evaluations of one image the whole check may take (see the module doc)."""
    total = 0
    for name, attack, _, radii in requested_pairs(request, request.resolved_attacks()):
        total += len(radii) * request.samples_for(name) * evaluations_per_sample(attack)
    for unit in sanity_units(request, quantized):
        total += unit.samples * evaluations_per_sample(get_attack(unit.attack))
    return total

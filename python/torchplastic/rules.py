"""The plasticity rules by name: what each one uses, in one table (SPEC §2 step 5).

The C++ side has the same table (``csrc/kernels/rules.h``); ``tests/python/test_registration.py``
checks that the two agree. Modules read it to decide which parameters to create, the
reference to decide which state to carry.
"""

from typing import NamedTuple, Optional

__all__ = ["RuleInfo", "RULES", "rule_info"]


class RuleInfo(NamedTuple):
    """What a rule uses.

    Example:
        >>> import torchplastic as tp
        >>> [name for name, r in tp.rules.RULES.items() if r.modulated]
        ['modulated', 'retroactive']
    """

    name: str
    uses_eta: bool               # the trace rate η (a parameter ``eta``)
    modulated: bool              # neuromodulation m_t (internal head or external tensor)
    eligibility: bool            # an eligibility trace E carried in the state
    coefficients: bool           # learned coefficients ``abcd`` [4, O|1, I|1]
    default_clip: Optional[float]  # the bound ``clip="auto"`` stands for


#: Every rule by name: ``"hebb"``, ``"oja"``, ``"modulated"``, ``"retroactive"``, ``"abcd"``
#: → its :class:`RuleInfo`.
RULES = {r.name: r for r in (
    RuleInfo("hebb", uses_eta=True, modulated=False, eligibility=False, coefficients=False,
             default_clip=None),
    RuleInfo("oja", uses_eta=True, modulated=False, eligibility=False, coefficients=False,
             default_clip=None),
    RuleInfo("modulated", uses_eta=False, modulated=True, eligibility=False, coefficients=False,
             default_clip=1.0),
    RuleInfo("retroactive", uses_eta=True, modulated=True, eligibility=True, coefficients=False,
             default_clip=1.0),
    RuleInfo("abcd", uses_eta=True, modulated=False, eligibility=False, coefficients=True,
             default_clip=1.0),
)}


def rule_info(name: str, owner: str = "plastic_scan") -> RuleInfo:
    """The rule called `name`; a ValueError naming ``rule`` for any other.

    Example:
        >>> import torchplastic as tp
        >>> tp.rules.rule_info("retroactive").eligibility
        True
    """
    try:
        return RULES[name]
    except (KeyError, TypeError):
        raise ValueError(f"{owner}: rule: expected one of {tuple(RULES)}, got {name!r}") from None

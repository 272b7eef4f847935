"""The catalogue: which methods and datasets the paper and its successors name, in table order.

Sweeps expand method groups from it (``--methods all+modern``) and tables and figures order their
rows by it, so it sits below both.
"""

from __future__ import annotations

#: The seven methods of the CCT paper, in its row order.
PAPER_METHODS = ("standard", "coteaching", "coteaching_plus", "jocor", "nct", "scn", "cct")
#: Methods after the paper that noisy-label FER papers compare with (EAC, ECCV 2022; RUL, NeurIPS 2021).
MODERN_METHODS = ("eac", "rul")
#: General noisy-label methods (not FER-specific) that general benchmarks include: GCE (NeurIPS
#: 2018), SCE (ICCV 2019), ELR (NeurIPS 2020), DivideMix (ICLR 2020).
LNL_METHODS = ("gce", "sce", "elr", "dividemix")
#: The FER methods that noisy-label FER papers since 2023 compare with: LA-Net (ICCV 2023), NLA
#: (AAAI 2025), ReSup (TAFFC 2025) and DMUE (CVPR 2021, in their tables since).
FER2023_METHODS = ("lanet", "nla", "resup", "dmue")
#: Row order of every table and figure: the paper's methods, the modern FER ones, the newer FER
#: ones, the general noisy-label ones, then any other by name.
METHOD_ORDER = PAPER_METHODS + MODERN_METHODS + FER2023_METHODS + LNL_METHODS
#: The paper's datasets, in its column order.
PAPER_DATASETS = ("rafdb", "ferplus", "affectnet8", "affectnet7", "fec")

#: Names that stand for a group of methods in ``--methods`` (joined with "+": ``all+modern``).
METHOD_GROUPS = {"all": PAPER_METHODS, "paper": PAPER_METHODS, "modern": MODERN_METHODS,
                 "fer2023": FER2023_METHODS, "lnl": LNL_METHODS}
#: What each group is, for help texts.
METHOD_GROUP_TEXT = {"all": "the paper's seven methods", "paper": "the paper's seven methods",
                     "modern": "EAC and RUL, the post-paper methods",
                     "fer2023": "LA-Net, NLA, ReSup and DMUE, the FER methods papers compare with since 2023",
                     "lnl": "GCE, SCE, ELR and DivideMix, general noisy-label methods"}


def method_order_key(method: str) -> tuple[int, str]:
    """Sort key of a method name: catalogue order first, then any other by name."""
    return (METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER), method)

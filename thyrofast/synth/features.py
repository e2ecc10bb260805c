"""Class-conditional sonographic features of the synthetic cohort and the Bayes posterior.

Every patient has one or more thyroid nodules described with the ACR TI-RADS
lexicon (Tessler et al. 2017) and zero or more cervical lymph nodes described
with the criteria of Leboulleux et al. 2007.  Given the class, nodules are drawn
i.i.d.: each first gets a hidden appearance type (benign-looking or suspicious,
with class-dependent odds), then its findings independently from that type's
published frequencies (a cystic nodule is "anechoic"); size and capsule contact
depend on the class directly.  Lymph nodes are drawn i.i.d. from a class-specific
mixture of metastatic and reactive nodes.  Because the generator *is* this model,
``log_likelihood`` is exact (hidden types are summed out) and ``posterior`` is the
Bayes-optimal P(class | latent features).

``TABLE`` lists every number with its source; ``docs/synth.md`` renders it.
Rendering-only nuisance parameters (location, aspect ratios, halo) have the
same distribution in every class and so cancel from the posterior.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..io.schema import DEFAULT_CLASSES as CLASSES  # the paper's preset: the phantom models these three

COMPOSITIONS = ("cystic", "spongiform", "mixed", "solid")
ECHOGENICITIES = ("anechoic", "hyperechoic", "isoechoic", "hypoechoic", "very_hypoechoic")
SHAPES = ("wider_than_tall", "taller_than_wide")
MARGINS = ("smooth", "ill_defined", "lobulated_irregular", "extrathyroidal_extension")
FOCI = ("none", "comet_tail", "macrocalcification", "peripheral_rim", "punctate")

# ACR TI-RADS points (Tessler et al. 2017, J Am Coll Radiol 14:587).
POINTS = {
    "composition": {"cystic": 0, "spongiform": 0, "mixed": 1, "solid": 2},
    "echogenicity": {"anechoic": 0, "hyperechoic": 1, "isoechoic": 1, "hypoechoic": 2, "very_hypoechoic": 3},
    "shape": {"wider_than_tall": 0, "taller_than_wide": 3},
    "margin": {"smooth": 0, "ill_defined": 0, "lobulated_irregular": 2, "extrathyroidal_extension": 3},
    "foci": {"none": 0, "comet_tail": 0, "macrocalcification": 1, "peripheral_rim": 2, "punctate": 3},
}

SRC_MOON = "[Moon08]"
SRC_TIRADS = "[Tessler17]"
SRC_META = "[LNM20]"
SRC_LEB = "[Leboulleux07]"
SRC_SAMULSKI = "[Samulski16]"
SRC_MODEL = "modelling choice"

#: Short keys used in TABLE -> full references.
REFERENCES = {
    "Moon08": "Moon WJ et al. Benign and malignant thyroid nodules: US differentiation - multicenter "
              "retrospective study. Radiology 2008;247:762-770 (849 nodules; sensitivity/specificity per finding).",
    "Tessler17": "Tessler FN et al. ACR Thyroid Imaging, Reporting and Data System (TI-RADS). "
                 "J Am Coll Radiol 2017;14:587-595 (lexicon and points).",
    "LNM20": "Risk factors for cervical lymph node metastasis in papillary thyroid carcinoma: a meta-analysis. "
             "Front Endocrinol 2020, doi:10.3389/fendo.2020.00265 (size >= 1 cm OR 3.5, capsular invasion "
             "OR 3.5, multifocality OR 2.0, extrathyroidal extension OR 2.0).",
    "Leboulleux07": "Leboulleux S et al. Ultrasound criteria of malignancy for cervical lymph nodes in patients "
                    "followed up for differentiated thyroid cancer. JCEM 2007;92:3590-3594 (56 nodes).",
    "Samulski16": "Samulski TD et al. The reliability of thyroid nodule ultrasound features and size to predict "
                  "malignancy in FNA specimens. Diagn Cytopathol 2016 (766 resected nodules; median benign "
                  "2.5 cm, malignant 2.0 cm).",
    "Xue20": "Xue T et al. Front Oncol 2020;10:436 (LNM predictors; consistent with [LNM20]).",
}


def odds_ratio_shift(p0: float, odds_ratio: float) -> float:
    """Probability whose odds are ``odds_ratio`` times the odds of ``p0``."""
    o = odds_ratio * p0 / (1.0 - p0)
    return o / (1.0 + o)


def _renorm(d: dict[str, float], key: str, value: float) -> dict[str, float]:
    """Set ``d[key] = value`` and rescale the other entries so the total stays 1."""
    rest = 1.0 - d[key]
    out = {k: (value if k == key else v * (1.0 - value) / rest) for k, v in d.items()}
    return out


# ---------------------------------------------------------------- nodule tables
_MALIGNANT_COMPOSITION = {"cystic": 0.005, "spongiform": 0.005, "mixed": 0.09, "solid": 0.90}
_MALIGNANT_ECHO = {"hyperechoic": 0.02, "isoechoic": 0.12, "hypoechoic": 0.45, "very_hypoechoic": 0.41}
_MALIGNANT_FOCI = {"none": 0.38, "comet_tail": 0.02, "macrocalcification": 0.10, "peripheral_rim": 0.06, "punctate": 0.44}
_NMTN_MARGIN = {"smooth": 0.22, "ill_defined": 0.22, "lobulated_irregular": 0.48, "extrathyroidal_extension": 0.08}
_NMTN_CAPSULE = 0.30
_NMTN_MULTIFOCAL = 0.25
_NMTN_P_GE_10MM = 0.50

#: Feature frequencies as published (benign column, malignant column).  They are used
#: as the feature distributions of the two nodule *appearance types* (below); the
#: optional shrinkage toward the benign/malignant average (NODULE_SHRINK,
#: NODE_SHRINK) is a difficulty knob kept at 0.
LITERATURE_NODULE: dict[str, dict[str, dict[str, float]]] = {
    "composition": {
        "BTN": {"cystic": 0.08, "spongiform": 0.10, "mixed": 0.30, "solid": 0.52},
        "malignant": dict(_MALIGNANT_COMPOSITION),
    },
    "echogenicity": {
        "BTN": {"hyperechoic": 0.08, "isoechoic": 0.54, "hypoechoic": 0.30, "very_hypoechoic": 0.08},
        "malignant": dict(_MALIGNANT_ECHO),
    },
    "shape": {
        "BTN": {"wider_than_tall": 0.914, "taller_than_wide": 0.086},
        "malignant": {"wider_than_tall": 0.60, "taller_than_wide": 0.40},
    },
    "margin": {
        "BTN": {"smooth": 0.68, "ill_defined": 0.235, "lobulated_irregular": 0.08, "extrathyroidal_extension": 0.005},
        "malignant": dict(_NMTN_MARGIN),
    },
    "foci": {
        "BTN": {"none": 0.70, "comet_tail": 0.13, "macrocalcification": 0.04, "peripheral_rim": 0.04, "punctate": 0.09},
        "malignant": dict(_MALIGNANT_FOCI),
    },
}
NODULE_SHRINK = 0.0
NODE_SHRINK = 0.0


def _shrink(b: dict[str, float], m: dict[str, float], lam: float) -> tuple[dict, dict]:
    pool = {k: 0.5 * (b[k] + m[k]) for k in b}
    return ({k: (1 - lam) * b[k] + lam * pool[k] for k in b}, {k: (1 - lam) * m[k] + lam * pool[k] for k in b})


#: Each nodule has a hidden appearance type: "benign-like" (features drawn from the
#: benign column) or "suspicious" (malignant column).  Some cancers look benign
#: (e.g. follicular-variant papillary carcinoma) and some benign nodules look
#: suspicious (e.g. degenerating nodules): P(suspicious | class).
SUSPICIOUS_APPEARANCE = {
    "BTN": 0.24,
    "NMTN": 0.68,
    "MMTN": 0.68,
}


def _effective_nodule_tables() -> dict[str, dict[str, dict[str, float]]]:
    """Feature distributions per appearance type ("benign", "NMTN", "MMTN" = suspicious in
    an NMTN / MMTN patient: MMTN differs by the ETE odds ratio)."""
    out = {}
    for feat, t in LITERATURE_NODULE.items():
        b, m = _shrink(t["BTN"], t["malignant"], NODULE_SHRINK)
        out[feat] = {"benign": b, "NMTN": dict(m), "MMTN": dict(m)}
    ete = "extrathyroidal_extension"
    nm = out["margin"]["NMTN"]
    out["margin"]["MMTN"] = _renorm(nm, ete, odds_ratio_shift(nm[ete], 2.0))
    return out


#: Categorical nodule feature distributions per appearance type (composition, shape,
#: margin, foci); echogenicity is over the non-anechoic categories (non-cystic nodules).
NODULE_CATEGORICAL = _effective_nodule_tables()

#: P(nodule abuts / bulges the thyroid capsule | class)
CAPSULE_CONTACT = {"BTN": 0.20, "NMTN": _NMTN_CAPSULE, "MMTN": odds_ratio_shift(_NMTN_CAPSULE, 3.5)}
#: P(more than one nodule | class); a multifocal patient has 2 (70%) or 3 (30%) nodules.
MULTIFOCAL = {"BTN": 0.35, "NMTN": _NMTN_MULTIFOCAL, "MMTN": odds_ratio_shift(_NMTN_MULTIFOCAL, 2.0)}
EXTRA_NODULES = {2: 0.7, 3: 0.3}

SIZE_RANGE_MM = (4.0, 50.0)
_SIZE_SIGMA = {"BTN": 0.50, "NMTN": 0.55, "MMTN": 0.55}
_MMTN_P_GE_10MM = odds_ratio_shift(_NMTN_P_GE_10MM, 3.5)


def _median_for(p_ge_10: float, sigma: float) -> float:
    from scipy.stats import norm

    return 10.0 * math.exp(sigma * float(norm.ppf(p_ge_10)))


#: Nodule maximum diameter: log-normal (median mm, sigma of ln), truncated to SIZE_RANGE_MM.
SIZE_LOGNORMAL = {
    "BTN": (20.0, _SIZE_SIGMA["BTN"]),
    "NMTN": (_median_for(_NMTN_P_GE_10MM, _SIZE_SIGMA["NMTN"]), _SIZE_SIGMA["NMTN"]),
    "MMTN": (_median_for(_MMTN_P_GE_10MM, _SIZE_SIGMA["MMTN"]), _SIZE_SIGMA["MMTN"]),
}

# ---------------------------------------------------------------- lymph-node tables
#: Number of lymph nodes that get imaged, per class.
NODE_COUNT = {
    "BTN": {0: 0.50, 1: 0.35, 2: 0.15},
    "NMTN": {0: 0.50, 1: 0.35, 2: 0.15},
    "MMTN": {0: 0.12, 1: 0.38, 2: 0.32, 3: 0.18},
}
#: Share of imaged nodes that are metastatic (others are reactive), per class.
METASTATIC_SHARE = {"BTN": 0.0, "NMTN": 0.0, "MMTN": 0.9}

_REACTIVE_SHORT = (3.0, 0.30)  # P(short axis > 5 mm) = 4% (spec 96%)
_METASTATIC_SHORT = (5.8, 0.45)  # P(> 5 mm) = 63% (sens 61%)
NODE_SHORT_AXIS_RANGE_MM = (1.5, 20.0)
#: P(binary finding | node kind) as published: (metastatic, reactive)
LITERATURE_NODE_BINARY = {
    "round": (0.46, 0.36),  # long/short axis < 2: sens 46%, spec 64%
    "hilum_absent": (0.97, 0.71),  # loss of fatty hilum: sens 100%, spec 29% (0.97: keep overlap)
    "microcalc": (0.46, 0.02),  # hyperechoic punctuations: sens 46%, spec 100% (0.02: 0/28 seen)
    "cystic": (0.11, 0.01),  # cystic appearance: sens 11%, spec 100% (0.01: 0/28 seen)
    "hyperechoic": (0.61, 0.18),  # not hypoechoic: hypoechogenicity sens 39%, spec 18%
}
NODE_BINARY = {
    k: ((1 - NODE_SHRINK) * pm + NODE_SHRINK * 0.5 * (pm + pr), (1 - NODE_SHRINK) * pr + NODE_SHRINK * 0.5 * (pm + pr))
    for k, (pm, pr) in LITERATURE_NODE_BINARY.items()
}


@dataclass(frozen=True)
class TableRow:
    feature: str
    value: str
    btn: float | str
    nmtn: float | str
    mmtn: float | str
    source: str


def _build_table() -> list[TableRow]:
    rows: list[TableRow] = []
    src = {
        "composition": f"{SRC_MOON} (spongiform 10.4% benign / 0.3% malignant); rest {SRC_MODEL}",
        "echogenicity": f"{SRC_MOON} (isoechoic 56.6%/11.9%, marked hypoechoic 7.8%/41.4%)",
        "shape": f"{SRC_MOON} (taller-than-wide sens 40.0%, spec 91.4%)",
        "margin": f"{SRC_MOON} (spiculated sens 48.3%, spec 91.8%); ETE OR 2.0 NMTN->MMTN, {SRC_META}",
        "foci": f"{SRC_MOON} (microcalcification 44.2%/9.2%, macrocalcification 9.7%/3.9%); comet tail, rim: {SRC_MODEL}",
    }
    for feat, per_class in NODULE_CATEGORICAL.items():
        for v in per_class["benign"]:
            rows.append(TableRow(feat, v, per_class["benign"][v], per_class["NMTN"][v], per_class["MMTN"][v], src[feat]))
    rows.append(TableRow("echogenicity", "anechoic", "if cystic", "if cystic", "if cystic", SRC_TIRADS))
    rows.append(TableRow("P(suspicious appearance), by class", "per nodule",
                         *(SUSPICIOUS_APPEARANCE[c] for c in CLASSES),
                         f"{SRC_MODEL}: benign-looking cancers (e.g. follicular variant) and suspicious-looking "
                         "benign nodules; sets the overall difficulty"))
    rows.append(TableRow("capsule_contact", "yes", *(CAPSULE_CONTACT[c] for c in CLASSES),
                         f"capsular invasion OR 3.5 NMTN->MMTN, {SRC_META}; base rates {SRC_MODEL}"))
    rows.append(TableRow("multifocal", "yes", *(MULTIFOCAL[c] for c in CLASSES),
                         f"multifocality OR 2.0 NMTN->MMTN, {SRC_META}; base rates {SRC_MODEL}"))
    rows.append(TableRow("n_nodules | multifocal", "2 / 3", "0.7 / 0.3", "0.7 / 0.3", "0.7 / 0.3", SRC_MODEL))
    rows.append(TableRow("size_mm", "log-normal median, sigma",
                         *(f"{SIZE_LOGNORMAL[c][0]:.1f}, {SIZE_LOGNORMAL[c][1]:.2f}" for c in CLASSES),
                         f"benign median {SRC_SAMULSKI}; P(>=10 mm) 0.50 NMTN, OR 3.5 to MMTN, {SRC_META}; "
                         f"truncated to {SIZE_RANGE_MM} mm"))
    for k in (0, 1, 2, 3):
        rows.append(TableRow("n_lymph_nodes", str(k), *(NODE_COUNT[c].get(k, 0.0) for c in CLASSES),
                             f"{SRC_MODEL}: US misses part of nodal disease; reactive nodes are common"))
    rows.append(TableRow("node is metastatic", "yes", *(METASTATIC_SHARE[c] for c in CLASSES), SRC_MODEL))
    rows.append(TableRow("node short axis mm", "log-normal median, sigma (metastatic / reactive)", "-", "-",
                         f"{_METASTATIC_SHORT[0]}, {_METASTATIC_SHORT[1]} / {_REACTIVE_SHORT[0]}, {_REACTIVE_SHORT[1]}",
                         f"{SRC_LEB} (short axis > 5 mm: sens 61%, spec 96%)"))
    for name, (pm, pr) in NODE_BINARY.items():
        rows.append(TableRow(f"node {name}", "P(metastatic) / P(reactive)", "-", "-", f"{pm} / {pr}",
                             f"{SRC_LEB}; floors above 0 keep classes overlapping"))
    return rows


TABLE = _build_table()


def table_markdown() -> str:
    """The table of every number and its source, as Markdown (used in docs/synth.md)."""

    def f(v):
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    out = ["| feature | value | BTN | NMTN | MMTN | source |", "|---|---|---|---|---|---|"]
    for r in TABLE:
        out.append(f"| {r.feature} | {r.value} | {f(r.btn)} | {f(r.nmtn)} | {f(r.mmtn)} | {r.source} |")
    return "\n".join(out)

# ---------------------------------------------------------------- data classes


@dataclass
class Nodule:
    composition: str
    echogenicity: str
    shape: str
    margin: str
    foci: str
    size_mm: float
    capsule_contact: bool
    # rendering nuisance (same distribution in every class)
    halo: bool = False
    lobe: str = "right"
    pole: float = 0.5  # 0 upper .. 1 lower, along the lobe
    aspect_long: float = 1.0  # length / transverse width
    aspect_ap: float = 0.8  # AP / transverse width
    lateral: float = 0.5  # position across the lobe 0 medial .. 1 lateral
    cystic_fraction: float = 0.0

    @property
    def tirads_points(self) -> int:
        return (POINTS["composition"][self.composition] + POINTS["echogenicity"][self.echogenicity]
                + POINTS["shape"][self.shape] + POINTS["margin"][self.margin] + POINTS["foci"][self.foci])

    @property
    def tirads_level(self) -> int:
        return tirads_level(self.tirads_points)


@dataclass
class LymphNode:
    short_axis_mm: float
    round: bool
    hilum_absent: bool
    microcalc: bool
    cystic: bool
    hyperechoic: bool
    metastatic: bool  # hidden truth, never used by the posterior
    long_ratio: float = 2.5  # rendering: long / short axis
    side: str = "right"


@dataclass
class Patient:
    label: str
    nodules: list[Nodule]
    nodes: list[LymphNode] = field(default_factory=list)

    @property
    def multifocal(self) -> bool:
        return len(self.nodules) > 1

    @property
    def index_nodule(self) -> Nodule:
        """The most suspicious nodule: highest TI-RADS points, then largest."""
        return max(self.nodules, key=lambda n: (n.tirads_points, n.size_mm))


def tirads_level(points: int) -> int:
    """ACR TI-RADS level TR1..TR5 from total points."""
    if points <= 1:
        return 1
    if points == 2:
        return 2
    if points == 3:
        return 3
    if points <= 6:
        return 4
    return 5


# ---------------------------------------------------------------- sampling


def _choice(rng: np.random.Generator, probs: dict) -> object:
    keys = list(probs)
    p = np.array([probs[k] for k in keys], dtype=float)
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


def _trunc_lognormal(rng: np.random.Generator, median: float, sigma: float, lo: float, hi: float) -> float:
    while True:
        x = median * math.exp(sigma * rng.standard_normal())
        if lo <= x <= hi:
            return float(x)


def _appearance(label: str, suspicious: bool) -> str:
    return ("MMTN" if label == "MMTN" else "NMTN") if suspicious else "benign"


def sample_nodule(rng: np.random.Generator, label: str) -> Nodule:
    t = NODULE_CATEGORICAL
    a = _appearance(label, bool(rng.random() < SUSPICIOUS_APPEARANCE[label]))
    comp = _choice(rng, t["composition"][a])
    echo = "anechoic" if comp == "cystic" else _choice(rng, t["echogenicity"][a])
    shape = _choice(rng, t["shape"][a])
    margin = _choice(rng, t["margin"][a])
    foci = _choice(rng, t["foci"][a])
    size = _trunc_lognormal(rng, *SIZE_LOGNORMAL[label], *SIZE_RANGE_MM)
    capsule = bool(rng.random() < CAPSULE_CONTACT[label]) or margin == "extrathyroidal_extension"
    # nuisance, class independent
    halo = bool(rng.random() < 0.2)
    lobe = "right" if rng.random() < 0.5 else "left"
    pole = float(rng.uniform(0.2, 0.8))
    aspect_long = float(rng.uniform(1.0, 1.6))
    aspect_ap = float(rng.uniform(1.12, 1.5) if shape == "taller_than_wide" else rng.uniform(0.5, 0.88))
    lateral = float(rng.uniform(0.3, 0.7))
    cyst_frac = {"cystic": rng.uniform(0.85, 0.97), "spongiform": rng.uniform(0.5, 0.7),
                 "mixed": rng.uniform(0.3, 0.7), "solid": rng.uniform(0.0, 0.05)}[comp]
    return Nodule(comp, echo, shape, margin, foci, size, capsule, halo, lobe, pole, aspect_long,
                  aspect_ap, lateral, float(cyst_frac))


def sample_node(rng: np.random.Generator, label: str) -> LymphNode:
    metastatic = bool(rng.random() < METASTATIC_SHARE[label])
    k = 0 if metastatic else 1
    med, sig = _METASTATIC_SHORT if metastatic else _REACTIVE_SHORT
    short = _trunc_lognormal(rng, med, sig, *NODE_SHORT_AXIS_RANGE_MM)
    flags = {name: bool(rng.random() < p[k]) for name, p in NODE_BINARY.items()}
    long_ratio = float(rng.uniform(1.15, 1.85) if flags["round"] else rng.uniform(2.1, 3.2))
    side = "right" if rng.random() < 0.5 else "left"
    return LymphNode(short, flags["round"], flags["hilum_absent"], flags["microcalc"], flags["cystic"],
                     flags["hyperechoic"], metastatic, long_ratio, side)


def sample_patient(rng: np.random.Generator, label: str) -> Patient:
    """Draw one patient's latent features given its class."""
    if label not in CLASSES:
        raise ValueError(f"label must be one of {CLASSES}, got {label!r}")
    n_nod = 1
    if rng.random() < MULTIFOCAL[label]:
        n_nod = int(_choice(rng, EXTRA_NODULES))
    nodules = [sample_nodule(rng, label) for _ in range(n_nod)]
    n_nodes = int(_choice(rng, NODE_COUNT[label]))
    nodes = [sample_node(rng, label) for _ in range(n_nodes)]
    return Patient(label, nodules, nodes)


# ---------------------------------------------------------------- likelihood / posterior


def _norm_cdf(z: float) -> float:
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


def _log_trunc_lognormal(x: float, median: float, sigma: float, lo: float, hi: float) -> float:
    mass = _norm_cdf(math.log(hi / median) / sigma) - _norm_cdf(math.log(lo / median) / sigma)
    z = (math.log(x) - math.log(median)) / sigma
    return -0.5 * z * z - math.log(x * sigma * math.sqrt(2 * math.pi)) - math.log(mass)


def _appearance_log_likelihood(n: Nodule, a: str) -> float:
    t = NODULE_CATEGORICAL
    ll = math.log(t["composition"][a][n.composition])
    if n.composition != "cystic":
        ll += math.log(t["echogenicity"][a][n.echogenicity])
    ll += math.log(t["shape"][a][n.shape])
    ll += math.log(t["margin"][a][n.margin])
    ll += math.log(t["foci"][a][n.foci])
    return ll


def nodule_log_likelihood(n: Nodule, label: str) -> float:
    w = SUSPICIOUS_APPEARANCE[label]
    ll = float(np.logaddexp(math.log(w) + _appearance_log_likelihood(n, _appearance(label, True)),
                            math.log1p(-w) + _appearance_log_likelihood(n, "benign")))
    ll += _log_trunc_lognormal(n.size_mm, *SIZE_LOGNORMAL[label], *SIZE_RANGE_MM)
    if n.margin != "extrathyroidal_extension":  # ETE implies capsule contact
        p = CAPSULE_CONTACT[label]
        ll += math.log(p if n.capsule_contact else 1.0 - p)
    return ll


def node_log_likelihood_kind(node: LymphNode, metastatic: bool) -> float:
    k = 0 if metastatic else 1
    med, sig = _METASTATIC_SHORT if metastatic else _REACTIVE_SHORT
    ll = _log_trunc_lognormal(node.short_axis_mm, med, sig, *NODE_SHORT_AXIS_RANGE_MM)
    for name, p in NODE_BINARY.items():
        ll += math.log(p[k] if getattr(node, name) else 1.0 - p[k])
    return ll


def node_log_likelihood(node: LymphNode, label: str) -> float:
    w = METASTATIC_SHARE[label]
    lm = node_log_likelihood_kind(node, True)
    lr = node_log_likelihood_kind(node, False)
    if w <= 0.0:
        return lr
    return float(np.logaddexp(math.log(w) + lm, math.log1p(-w) + lr))


def log_likelihood(p: Patient, label: str) -> float:
    """log P(latent features of ``p`` | class ``label``) under the generator."""
    n = len(p.nodules)
    ll = math.log(1.0 - MULTIFOCAL[label]) if n == 1 else math.log(MULTIFOCAL[label] * EXTRA_NODULES[n])
    ll += sum(nodule_log_likelihood(x, label) for x in p.nodules)
    ll += math.log(NODE_COUNT[label].get(len(p.nodes), 0.0) or 1e-300)
    ll += sum(node_log_likelihood(x, label) for x in p.nodes)
    return ll


def posterior(p: Patient, prior: dict[str, float] | None = None) -> dict[str, float]:
    """Bayes-optimal P(class | latent features); ``prior`` defaults to the paper's 60/15/120."""
    prior = prior or PAPER_PRIOR
    lp = np.array([math.log(prior[c]) + log_likelihood(p, c) for c in CLASSES])
    lp -= lp.max()
    w = np.exp(lp)
    w /= w.sum()
    return {c: float(v) for c, v in zip(CLASSES, w)}


PAPER_COUNTS = {"BTN": 60, "NMTN": 15, "MMTN": 120}
PAPER_PRIOR = {c: v / sum(PAPER_COUNTS.values()) for c, v in PAPER_COUNTS.items()}

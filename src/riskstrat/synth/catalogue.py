"""Clinical catalogue of the synthetic population: conditions, medicines and diagnoses.

Everything here is plain data (frozen dataclasses and tuples) so that the generator and, later,
the oracle read the same numbers. Codes are checked against ``riskstrat.data.contract`` by the
tests.

Effect sizes are invented but ordered plausibly (heart failure and COPD raise admission risk
more than hypertension; cancer and dementia raise mortality); they are not estimates from data.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from riskstrat.data.contract import CONDITIONS


@dataclass(frozen=True)
class ConditionSpec:
    """How one long-term condition arises and what it does.

    Onset is drawn once per person: with lifetime probability ``sigmoid(logit(lifetime) +
    effects)`` the person develops the condition at an age from a logistic curve centred on
    ``a50`` (years) with spread ``scale`` (years); otherwise never.
    """

    code: str
    lifetime: float  # lifetime probability for a person with all effects at zero
    a50: float  # median onset age among those who develop it (years)
    scale: float  # logistic spread of onset age (years)
    min_age: float = 0.0  # onset never earlier than this age (years)
    male: float = 0.0  # log-odds for males (negative: more common in females)
    deprivation: float = 0.0  # log-odds per unit of deprivation (-1 least .. +1 most deprived)
    deprivation_age_shift: float = 3.0  # years earlier onset in the most deprived
    multimorbidity: float = 0.5  # loading on the shared latent multimorbidity factor
    smoker: float = 0.0  # log-odds for ever-smokers
    alcohol: float = 0.0  # log-odds for alcohol misuse
    parents: tuple[tuple[str, float], ...] = ()  # log-odds if the person ever has the parent
    frailty_weight: float = 0.02  # deficits added to latent frailty while present
    admission_log_hr: float = 0.0  # log hazard ratio for emergency admission while present
    death_log_hr: float = 0.0  # log hazard ratio for death while present


#: Conditions in the order their onsets are drawn (parents before children). PALLIATIVE is not
#: drawn up front: people enter the register in the monthly simulation as death approaches.
CONDITION_SPECS: tuple[ConditionSpec, ...] = (
    ConditionSpec("LEARNING_DISABILITY", 0.0045, 3.0, 2.0, 0.5, male=0.4, deprivation=0.2,
                  deprivation_age_shift=0.0, multimorbidity=0.0, frailty_weight=0.05,
                  admission_log_hr=0.4, death_log_hr=0.6),
    ConditionSpec("HYPERTENSION", 0.6, 64.0, 9.0, 18.0, male=0.15, deprivation=0.25,
                  multimorbidity=0.5, smoker=0.1, frailty_weight=0.015,
                  admission_log_hr=0.05),
    ConditionSpec("DIABETES", 0.20, 63.0, 11.0, 10.0, male=0.3, deprivation=0.5,
                  multimorbidity=0.5, parents=(("HYPERTENSION", 0.5),),
                  frailty_weight=0.03, admission_log_hr=0.3, death_log_hr=0.2),
    ConditionSpec("ASTHMA", 0.09, 14.0, 12.0, 2.0, deprivation=0.2, multimorbidity=0.3,
                  smoker=0.2, deprivation_age_shift=0.0, frailty_weight=0.02,
                  admission_log_hr=0.25),
    ConditionSpec("COPD", 0.033, 69.0, 9.0, 40.0, deprivation=0.5, multimorbidity=0.4,
                  smoker=2.3, parents=(("ASTHMA", 1.0),), frailty_weight=0.04,
                  admission_log_hr=0.7, death_log_hr=0.5),
    ConditionSpec("CHD", 0.1, 74.0, 9.0, 30.0, male=0.7, deprivation=0.4, smoker=0.5,
                  parents=(("HYPERTENSION", 0.5), ("DIABETES", 0.5)), frailty_weight=0.03,
                  admission_log_hr=0.35, death_log_hr=0.2),
    ConditionSpec("AF", 0.33, 85.0, 8.0, 40.0, male=0.3, parents=(("HYPERTENSION", 0.4),),
                  multimorbidity=0.3, frailty_weight=0.03, admission_log_hr=0.3,
                  death_log_hr=0.2),
    ConditionSpec("HEART_FAILURE", 0.09, 86.0, 8.0, 40.0, male=0.4, deprivation=0.3,
                  parents=(("CHD", 1.2), ("AF", 0.8), ("HYPERTENSION", 0.4), ("DIABETES", 0.4)),
                  frailty_weight=0.05, admission_log_hr=0.7, death_log_hr=0.7),
    ConditionSpec("STROKE_TIA", 0.1, 80.0, 9.0, 30.0, deprivation=0.3, smoker=0.4,
                  parents=(("AF", 0.8), ("HYPERTENSION", 0.5), ("DIABETES", 0.3)),
                  frailty_weight=0.05, admission_log_hr=0.35, death_log_hr=0.3),
    ConditionSpec("CKD", 0.32, 81.0, 9.0, 30.0, male=-0.2, deprivation=0.3,
                  parents=(("HYPERTENSION", 0.6), ("DIABETES", 0.7), ("HEART_FAILURE", 0.6)),
                  frailty_weight=0.03, admission_log_hr=0.4, death_log_hr=0.3),
    ConditionSpec("PAD", 0.022, 75.0, 8.0, 40.0, male=0.5, deprivation=0.3, smoker=1.0,
                  parents=(("DIABETES", 0.8),), frailty_weight=0.03, admission_log_hr=0.4,
                  death_log_hr=0.2),
    ConditionSpec("PARKINSONS", 0.02, 79.0, 7.0, 40.0, male=0.4, multimorbidity=0.1,
                  deprivation_age_shift=0.0, frailty_weight=0.08, admission_log_hr=0.5,
                  death_log_hr=0.4),
    ConditionSpec("DEMENTIA", 0.3, 88.0, 6.0, 50.0, male=-0.1, deprivation=0.2,
                  parents=(("LEARNING_DISABILITY", 1.5), ("PARKINSONS", 1.0),
                           ("STROKE_TIA", 0.6), ("DIABETES", 0.3)),
                  frailty_weight=0.08, admission_log_hr=0.4, death_log_hr=0.8),
    ConditionSpec("EPILEPSY", 0.006, 20.0, 20.0, 1.0, deprivation=0.3,
                  parents=(("LEARNING_DISABILITY", 2.5), ("STROKE_TIA", 1.0)),
                  deprivation_age_shift=0.0, frailty_weight=0.03, admission_log_hr=0.5,
                  death_log_hr=0.3),
    ConditionSpec("DEPRESSION", 0.28, 36.0, 12.0, 12.0, male=-0.6, deprivation=0.4,
                  multimorbidity=0.4, alcohol=0.8, deprivation_age_shift=0.0,
                  frailty_weight=0.02, admission_log_hr=0.25),
    ConditionSpec("SMI", 0.011, 28.0, 8.0, 14.0, male=0.1, deprivation=0.8, alcohol=0.8,
                  deprivation_age_shift=0.0, multimorbidity=0.2, frailty_weight=0.02,
                  admission_log_hr=0.5, death_log_hr=0.5),
    ConditionSpec("LIVER_DISEASE", 0.012, 56.0, 10.0, 18.0, male=0.3, deprivation=0.5,
                  alcohol=2.5, parents=(("DIABETES", 0.6),), frailty_weight=0.03,
                  admission_log_hr=0.7, death_log_hr=1.0),
    ConditionSpec("OSTEOPOROSIS", 0.2, 80.0, 7.0, 45.0, male=-1.3, multimorbidity=0.3,
                  smoker=0.3, frailty_weight=0.03, admission_log_hr=0.2),
    ConditionSpec("RHEUMATOID_ARTHRITIS", 0.035, 56.0, 12.0, 18.0, male=-0.9,
                  multimorbidity=0.3, deprivation_age_shift=0.0, frailty_weight=0.03,
                  admission_log_hr=0.2, death_log_hr=0.1),
    ConditionSpec("CANCER", 0.30, 79.0, 10.0, 18.0, male=0.2, deprivation=0.2, smoker=0.5,
                  alcohol=0.3, frailty_weight=0.04, admission_log_hr=0.6, death_log_hr=0.8),
)  # fmt: skip

#: The palliative care register: entered in the monthly simulation, never drawn up front.
PALLIATIVE_SPEC = ConditionSpec(
    "PALLIATIVE", 0.0, 0.0, 1.0, frailty_weight=0.05, admission_log_hr=0.5, death_log_hr=1.9
)

ALL_CONDITION_SPECS: dict[str, ConditionSpec] = {
    s.code: s for s in (*CONDITION_SPECS, PALLIATIVE_SPEC)
}
#: Column index of each condition in the hidden onset matrix (contract order).
CONDITION_INDEX: dict[str, int] = {c: i for i, c in enumerate(CONDITIONS)}


@dataclass(frozen=True)
class Medicine:
    """A generic medicine and its contract drug class."""

    name: str
    drug_class: str


@dataclass(frozen=True)
class RegimenGroup:
    """A repeat prescription that follows a condition or arises on its own.

    A person in scope gets at most one of ``options`` (drawn with the given probabilities; the
    remainder is "none"). Condition-triggered groups start shortly after diagnosis; background
    groups (``trigger == ""``) start at an age drawn like a condition onset. Issues repeat every
    ``interval_days`` (or twice that for a share of people) while registered and alive, until
    an optional stop drawn from ``mean_duration_months``.
    """

    name: str
    trigger: str  # condition code, or "" for a background regimen
    options: tuple[tuple[Medicine, float], ...]
    interval_days: int = 28
    long_interval_share: float = 0.3  # share issued at twice the interval
    mean_duration_months: float | None = None  # None: continues indefinitely
    # Background regimens only: onset model as for conditions.
    lifetime: float = 0.0
    a50: float = 70.0
    scale: float = 10.0
    min_age: float = 18.0
    male: float = 0.0
    sex: str = ""  # "M" or "F": only people of this recorded sex
    frailty: float = 0.0  # log-odds per SD of the latent frailty propensity
    per_condition: float = 0.0  # log-odds per long-term condition ever diagnosed
    conditions: tuple[tuple[str, float], ...] = field(default=())  # extra log-odds


def _m(name: str, drug_class: str) -> Medicine:
    return Medicine(name, drug_class)


AMLODIPINE = _m("amlodipine", "ANTIHYPERTENSIVE")
RAMIPRIL = _m("ramipril", "ANTIHYPERTENSIVE")
LOSARTAN = _m("losartan", "ANTIHYPERTENSIVE")
INDAPAMIDE = _m("indapamide", "DIURETIC")
BISOPROLOL = _m("bisoprolol", "BETA_BLOCKER")
ATORVASTATIN = _m("atorvastatin", "STATIN")
SIMVASTATIN = _m("simvastatin", "STATIN")
ASPIRIN = _m("aspirin", "ANTIPLATELET")
CLOPIDOGREL = _m("clopidogrel", "ANTIPLATELET")
FUROSEMIDE = _m("furosemide", "DIURETIC")
SPIRONOLACTONE = _m("spironolactone", "DIURETIC")
SALBUTAMOL = _m("salbutamol", "BRONCHODILATOR")
BECLOMETASONE = _m("beclometasone", "INHALED_CORTICOSTEROID")
PREDNISOLONE = _m("prednisolone", "ORAL_CORTICOSTEROID")
SERTRALINE = _m("sertraline", "ANTIDEPRESSANT")
MORPHINE = _m("morphine", "OPIOID")
SENNA = _m("senna", "LAXATIVE")
LACTULOSE = _m("lactulose", "LAXATIVE")

REGIMEN_GROUPS: tuple[RegimenGroup, ...] = (
    # Condition-triggered repeats.
    RegimenGroup("htn_first", "HYPERTENSION", ((AMLODIPINE, 0.45), (RAMIPRIL, 0.3),
                                               (LOSARTAN, 0.1))),
    RegimenGroup("htn_second", "HYPERTENSION", ((INDAPAMIDE, 0.15), (BISOPROLOL, 0.05),
                                                (_m("doxazosin", "ANTIHYPERTENSIVE"), 0.05))),
    RegimenGroup("af_anticoag", "AF", ((_m("apixaban", "ANTICOAGULANT"), 0.55),
                                       (_m("edoxaban", "ANTICOAGULANT"), 0.12),
                                       (_m("warfarin", "ANTICOAGULANT"), 0.08))),
    RegimenGroup("af_rate", "AF", ((BISOPROLOL, 0.6), (_m("digoxin", "DIGOXIN"), 0.1))),
    RegimenGroup("hf_diuretic", "HEART_FAILURE", ((FUROSEMIDE, 0.75),
                                                  (_m("bumetanide", "DIURETIC"), 0.08))),
    RegimenGroup("hf_bb", "HEART_FAILURE", ((BISOPROLOL, 0.7),)),
    RegimenGroup("hf_acei", "HEART_FAILURE", ((RAMIPRIL, 0.5),
                                              (_m("sacubitril with valsartan", "OTHER"), 0.1))),
    RegimenGroup("hf_mra", "HEART_FAILURE", ((SPIRONOLACTONE, 0.3),)),
    RegimenGroup("chd_statin", "CHD", ((ATORVASTATIN, 0.7), (SIMVASTATIN, 0.1))),
    RegimenGroup("chd_antiplatelet", "CHD", ((ASPIRIN, 0.55), (CLOPIDOGREL, 0.2))),
    RegimenGroup("chd_bb", "CHD", ((BISOPROLOL, 0.4),)),
    RegimenGroup("chd_nitrate", "CHD", ((_m("glyceryl trinitrate", "OTHER"), 0.3),),
                 interval_days=112, long_interval_share=0.0),
    RegimenGroup("chd_ismn", "CHD", ((_m("isosorbide mononitrate", "OTHER"), 0.15),)),
    RegimenGroup("stroke_statin", "STROKE_TIA", ((ATORVASTATIN, 0.75),)),
    RegimenGroup("stroke_antiplatelet", "STROKE_TIA", ((CLOPIDOGREL, 0.65), (ASPIRIN, 0.15))),
    RegimenGroup("dm_first", "DIABETES", ((_m("metformin", "ORAL_HYPOGLYCAEMIC"), 0.75),)),
    RegimenGroup("dm_second", "DIABETES", ((_m("gliclazide", "ORAL_HYPOGLYCAEMIC"), 0.18),
                                           (_m("empagliflozin", "ORAL_HYPOGLYCAEMIC"), 0.15),
                                           (_m("sitagliptin", "ORAL_HYPOGLYCAEMIC"), 0.1))),
    RegimenGroup("dm_insulin", "DIABETES", ((_m("insulin glargine", "INSULIN"), 0.1),
                                            (_m("insulin aspart", "INSULIN"), 0.04))),
    RegimenGroup("dm_statin", "DIABETES", ((ATORVASTATIN, 0.6),)),
    RegimenGroup("copd_saba", "COPD", ((SALBUTAMOL, 0.85),)),
    RegimenGroup("copd_lama", "COPD", ((_m("tiotropium", "BRONCHODILATOR"), 0.45),
                                       (_m("umeclidinium", "BRONCHODILATOR"), 0.1))),
    RegimenGroup("copd_ics", "COPD", ((BECLOMETASONE, 0.35),
                                      (_m("budesonide with formoterol",
                                          "INHALED_CORTICOSTEROID"), 0.2))),
    RegimenGroup("asthma_saba", "ASTHMA", ((SALBUTAMOL, 0.85),), interval_days=56),
    RegimenGroup("asthma_ics", "ASTHMA", ((BECLOMETASONE, 0.45),
                                          (_m("budesonide with formoterol",
                                              "INHALED_CORTICOSTEROID"), 0.2)),
                 interval_days=56),
    RegimenGroup("asthma_ltra", "ASTHMA", ((_m("montelukast", "OTHER"), 0.08),)),
    RegimenGroup("depression_ad", "DEPRESSION", ((SERTRALINE, 0.35),
                                                 (_m("citalopram", "ANTIDEPRESSANT"), 0.15),
                                                 (_m("fluoxetine", "ANTIDEPRESSANT"), 0.1),
                                                 (_m("mirtazapine", "ANTIDEPRESSANT"), 0.1)),
                 mean_duration_months=30.0),
    RegimenGroup("smi_ap", "SMI", ((_m("olanzapine", "ANTIPSYCHOTIC"), 0.35),
                                   (_m("aripiprazole", "ANTIPSYCHOTIC"), 0.25),
                                   (_m("quetiapine", "ANTIPSYCHOTIC"), 0.15),
                                   (_m("lithium", "OTHER"), 0.1))),
    RegimenGroup("dementia_ache", "DEMENTIA", ((_m("donepezil", "OTHER"), 0.5),
                                               (_m("memantine", "OTHER"), 0.2))),
    RegimenGroup("dementia_ap", "DEMENTIA", ((_m("risperidone", "ANTIPSYCHOTIC"), 0.08),
                                             (_m("quetiapine", "ANTIPSYCHOTIC"), 0.05))),
    RegimenGroup("pd_levodopa", "PARKINSONS", ((_m("co-careldopa", "DOPAMINERGIC"), 0.75),
                                               (_m("co-beneldopa", "DOPAMINERGIC"), 0.15))),
    RegimenGroup("pd_agonist", "PARKINSONS", ((_m("ropinirole", "DOPAMINERGIC"), 0.25),
                                              (_m("rasagiline", "DOPAMINERGIC"), 0.1))),
    RegimenGroup("epilepsy_aed", "EPILEPSY", ((_m("levetiracetam", "ANTIEPILEPTIC"), 0.4),
                                              (_m("sodium valproate", "ANTIEPILEPTIC"), 0.2),
                                              (_m("lamotrigine", "ANTIEPILEPTIC"), 0.25),
                                              (_m("carbamazepine", "ANTIEPILEPTIC"), 0.1))),
    RegimenGroup("ckd_extra", "CKD", ((_m("sodium bicarbonate", "OTHER"), 0.05),
                                      (_m("alfacalcidol", "OTHER"), 0.04))),
    RegimenGroup("osteo_bisphos", "OSTEOPOROSIS", ((_m("alendronic acid", "OTHER"), 0.65),),
                 interval_days=84, long_interval_share=0.0),
    RegimenGroup("osteo_vitd", "OSTEOPOROSIS", ((_m("colecalciferol", "OTHER"), 0.6),)),
    RegimenGroup("ra_dmard", "RHEUMATOID_ARTHRITIS", ((_m("methotrexate", "OTHER"), 0.6),
                                                      (_m("sulfasalazine", "OTHER"), 0.15))),
    RegimenGroup("ra_folate", "RHEUMATOID_ARTHRITIS", ((_m("folic acid", "OTHER"), 0.55),)),
    RegimenGroup("ra_nsaid", "RHEUMATOID_ARTHRITIS", ((_m("naproxen", "NSAID"), 0.25),)),
    RegimenGroup("ra_steroid", "RHEUMATOID_ARTHRITIS", ((PREDNISOLONE, 0.2),),
                 mean_duration_months=12.0),
    RegimenGroup("pad_antiplatelet", "PAD", ((CLOPIDOGREL, 0.7),)),
    RegimenGroup("pad_statin", "PAD", ((ATORVASTATIN, 0.7),)),
    RegimenGroup("cancer_analgesia", "CANCER", ((MORPHINE, 0.1),
                                                (_m("co-codamol", "OPIOID"), 0.1))),
    RegimenGroup("liver_lax", "LIVER_DISEASE", ((LACTULOSE, 0.4),)),
    RegimenGroup("liver_bb", "LIVER_DISEASE", ((_m("propranolol", "BETA_BLOCKER"), 0.3),)),
    RegimenGroup("liver_diuretic", "LIVER_DISEASE", ((SPIRONOLACTONE, 0.3),)),
    RegimenGroup("ld_ap", "LEARNING_DISABILITY", ((_m("risperidone", "ANTIPSYCHOTIC"), 0.12),)),
    RegimenGroup("palliative_opioid", "PALLIATIVE", ((MORPHINE, 0.5),
                                                     (_m("oxycodone", "OPIOID"), 0.15))),
    RegimenGroup("palliative_lax", "PALLIATIVE", ((SENNA, 0.4), (LACTULOSE, 0.15))),
    RegimenGroup("palliative_anticipatory", "PALLIATIVE",
                 ((_m("midazolam", "BENZODIAZEPINE"), 0.35),), interval_days=56,
                 long_interval_share=0.0),
    # Background repeats (no register condition): pain, sleep, gut, thyroid, bladder, ...
    RegimenGroup("pain_weak_opioid", "", ((_m("codeine", "OPIOID"), 0.35),
                                          (_m("co-codamol", "OPIOID"), 0.45),
                                          (_m("tramadol", "OPIOID"), 0.2)),
                 mean_duration_months=24.0, lifetime=0.25, a50=66.0, scale=12.0,
                 frailty=0.6, per_condition=0.3,
                 conditions=(("RHEUMATOID_ARTHRITIS", 1.0), ("OSTEOPOROSIS", 0.6))),
    RegimenGroup("pain_strong_opioid", "", ((MORPHINE, 0.6), (_m("oxycodone", "OPIOID"), 0.2),
                                            (_m("buprenorphine", "OPIOID"), 0.2)),
                 mean_duration_months=18.0, lifetime=0.07, a50=80.0, scale=9.0,
                 frailty=0.8, per_condition=0.15, conditions=(("CANCER", 1.0),)),
    RegimenGroup("paracetamol", "", ((_m("paracetamol", "OTHER"), 1.0),),
                 lifetime=0.5, a50=80.0, scale=8.0, frailty=0.8, per_condition=0.25),
    RegimenGroup("nsaid", "", ((_m("naproxen", "NSAID"), 0.5), (_m("ibuprofen", "NSAID"), 0.5)),
                 mean_duration_months=8.0, lifetime=0.15, a50=55.0, scale=15.0,
                 per_condition=0.05),
    RegimenGroup("sleep", "", ((_m("zopiclone", "Z_DRUG"), 0.55),
                               (_m("diazepam", "BENZODIAZEPINE"), 0.25),
                               (_m("temazepam", "BENZODIAZEPINE"), 0.2)),
                 mean_duration_months=24.0, lifetime=0.12, a50=65.0, scale=15.0,
                 frailty=0.5, per_condition=0.1, conditions=(("DEPRESSION", 1.0),)),
    RegimenGroup("ppi", "", ((_m("omeprazole", "PPI"), 0.6), (_m("lansoprazole", "PPI"), 0.4)),
                 lifetime=0.55, a50=68.0, scale=12.0, frailty=0.4, per_condition=0.3),
    RegimenGroup("laxative", "", ((SENNA, 0.45), (_m("macrogol", "LAXATIVE"), 0.45),
                                  (LACTULOSE, 0.1)),
                 lifetime=0.35, a50=88.0, scale=7.0, frailty=1.0, per_condition=0.35,
                 conditions=(("PARKINSONS", 1.5), ("DEMENTIA", 0.8))),
    RegimenGroup("levothyroxine", "", ((_m("levothyroxine", "OTHER"), 1.0),),
                 lifetime=0.09, a50=60.0, scale=14.0, male=-1.6),
    RegimenGroup("tamsulosin", "", ((_m("tamsulosin", "OTHER"), 1.0),),
                 lifetime=0.35, a50=82.0, scale=8.0, min_age=50.0, sex="M"),
    RegimenGroup("bladder", "", ((_m("oxybutynin", "ANTICHOLINERGIC"), 0.5),
                                 (_m("solifenacin", "ANTICHOLINERGIC"), 0.3),
                                 (_m("mirabegron", "OTHER"), 0.2)),
                 mean_duration_months=30.0, lifetime=0.10, a50=78.0, scale=9.0,
                 male=-0.4, frailty=0.6, per_condition=0.2),
    RegimenGroup("neuropathic", "", ((_m("amitriptyline", "ANTIDEPRESSANT"), 0.5),
                                     (_m("gabapentin", "ANTIEPILEPTIC"), 0.25),
                                     (_m("pregabalin", "ANTIEPILEPTIC"), 0.25)),
                 mean_duration_months=24.0, lifetime=0.10, a50=62.0, scale=13.0,
                 frailty=0.4, per_condition=0.1, conditions=(("DIABETES", 0.8),)),
    RegimenGroup("primary_statin", "", ((ATORVASTATIN, 0.8), (SIMVASTATIN, 0.2)),
                 lifetime=0.30, a50=66.0, scale=9.0, min_age=40.0, male=0.3,
                 conditions=(("HYPERTENSION", 1.0), ("CKD", 0.8))),
    RegimenGroup("emollient_etc", "", ((_m("colecalciferol", "OTHER"), 0.5),
                                       (_m("ferrous fumarate", "OTHER"), 0.3),
                                       (_m("folic acid", "OTHER"), 0.2)),
                 mean_duration_months=12.0, lifetime=0.25, a50=80.0, scale=10.0,
                 frailty=0.6, per_condition=0.35),
    RegimenGroup("elderly_bone", "", ((_m("calcium carbonate with colecalciferol", "OTHER"),
                                        1.0),),
                 lifetime=0.3, a50=84.0, scale=7.0, min_age=50.0, male=-0.6, frailty=0.6,
                 per_condition=0.3, conditions=(("OSTEOPOROSIS", 2.5),)),
    RegimenGroup("eye_drops", "", ((_m("latanoprost", "OTHER"), 0.7),
                                   (_m("timolol", "BETA_BLOCKER"), 0.3)),
                 lifetime=0.15, a50=80.0, scale=9.0, min_age=40.0),
    RegimenGroup("late_diuretic", "", ((FUROSEMIDE, 0.8), (_m("bendroflumethiazide",
                                                                "DIURETIC"), 0.2)),
                 lifetime=0.2, a50=88.0, scale=7.0, min_age=50.0, frailty=0.6,
                 per_condition=0.35, conditions=(("CKD", 0.7),)),
    RegimenGroup("late_antidepressant", "", ((SERTRALINE, 0.4),
                                             (_m("mirtazapine", "ANTIDEPRESSANT"), 0.4),
                                             (_m("citalopram", "ANTIDEPRESSANT"), 0.2)),
                 mean_duration_months=36.0, lifetime=0.2, a50=86.0, scale=8.0, min_age=50.0,
                 frailty=0.8, conditions=(("DEMENTIA", 1.0), ("DEPRESSION", 1.0))),
    RegimenGroup("gout", "", ((_m("allopurinol", "OTHER"), 1.0),),
                 lifetime=0.035, a50=70.0, scale=10.0, min_age=30.0, male=1.2,
                 conditions=(("CKD", 1.0),)),
    RegimenGroup("bph_5ari", "", ((_m("finasteride", "OTHER"), 1.0),),
                 lifetime=0.15, a50=84.0, scale=8.0, min_age=55.0, sex="M"),
    RegimenGroup("dry_eyes", "", ((_m("carbomer", "OTHER"), 0.5),
                                  (_m("hypromellose", "OTHER"), 0.5)),
                 lifetime=0.2, a50=84.0, scale=8.0, min_age=40.0, frailty=0.5,
                 per_condition=0.2),
    RegimenGroup("alginate", "", ((_m("sodium alginate with potassium bicarbonate", "OTHER"),
                                   1.0),),
                 mean_duration_months=24.0, lifetime=0.2, a50=82.0, scale=9.0,
                 frailty=0.6, per_condition=0.3),
    RegimenGroup("b12", "", ((_m("hydroxocobalamin", "OTHER"), 1.0),), interval_days=84,
                 long_interval_share=0.0, lifetime=0.06, a50=75.0, scale=12.0, male=-0.5),
    RegimenGroup("antihistamine", "", ((_m("cetirizine", "OTHER"), 0.5),
                                       (_m("loratadine", "OTHER"), 0.5)),
                 interval_days=56, mean_duration_months=8.0, lifetime=0.2, a50=25.0,
                 scale=12.0, min_age=5.0),
    RegimenGroup("migraine", "", ((_m("sumatriptan", "OTHER"), 0.7),
                                  (_m("propranolol", "BETA_BLOCKER"), 0.3)),
                 interval_days=56, mean_duration_months=24.0, lifetime=0.06, a50=30.0,
                 scale=8.0, min_age=12.0, male=-1.0),
    RegimenGroup("contraceptive", "", ((_m("desogestrel", "OTHER"), 0.6),
                                       (_m("levonorgestrel with ethinylestradiol", "OTHER"),
                                        0.4)),
                 interval_days=84, long_interval_share=0.0, mean_duration_months=30.0,
                 lifetime=0.35, a50=22.0, scale=4.0, min_age=15.0, sex="F"),
)  # fmt: skip

#: One-off courses issued at random (Poisson) times: (medicine, share of courses).
ANTIBIOTIC_COURSES: tuple[tuple[Medicine, float], ...] = (
    (_m("amoxicillin", "ANTIBIOTIC"), 0.35),
    (_m("nitrofurantoin", "ANTIBIOTIC"), 0.2),
    (_m("doxycycline", "ANTIBIOTIC"), 0.2),
    (_m("flucloxacillin", "ANTIBIOTIC"), 0.12),
    (_m("clarithromycin", "ANTIBIOTIC"), 0.08),
    (_m("trimethoprim", "ANTIBIOTIC"), 0.05),
)
STEROID_COURSE = PREDNISOLONE

#: ICD-10 primary diagnoses for emergency admissions. The weight of each for a given
#: admission is computed in the generator from the person's conditions, age and recent fall.
EMERGENCY_DIAGNOSES: tuple[str, ...] = (
    "J44.1", "I50.9", "N39.0", "R55", "S72.0", "J18.9", "R07.4", "I21.9", "I48.9", "I63.9",
    "R10.4", "A09", "J45.9", "F05.9", "E16.2", "T43.2", "K70.3", "C80.9", "G40.9", "J06.9",
    "L03.1", "R06.0",
)  # fmt: skip
#: Diagnoses for A&E attendances that do not lead to admission.
AE_DIAGNOSES: tuple[str, ...] = (
    "S93.4", "S62.6", "S06.0", "R10.4", "J06.9", "T14.9", "R07.4", "S01.8", "L03.1", "R51",
)  # fmt: skip
AE_FALL_DIAGNOSIS = "W19"
#: Diagnoses for elective admissions.
ELECTIVE_DIAGNOSES: tuple[str, ...] = (
    "H25.9", "M17.1", "K80.2", "Z51.1", "N40", "K40.9", "M16.1", "K57.3", "C18.9", "C50.9",
)  # fmt: skip
MATERNITY_DIAGNOSES: tuple[str, ...] = ("O80", "O82", "O81.4", "O70.0")

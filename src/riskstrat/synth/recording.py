"""What the monthly loop records each month: emergency admissions (and the A&E attendances
before them), falls, interventions, GP-side contacts and activity, and the frailty-dependent
observations. A part of the simulator (:mod:`riskstrat.synth.simulation`).
"""

from __future__ import annotations

import numpy as np

from riskstrat.synth.catalogue import (
    AE_DIAGNOSES,
    AE_FALL_DIAGNOSIS,
    ELECTIVE_DIAGNOSES,
    EMERGENCY_DIAGNOSES,
    MATERNITY_DIAGNOSES,
)
from riskstrat.synth.dynamics import Falls, Interventions
from riskstrat.synth.hazards import BoolArray, FloatArray, HazardInputs, IntArray
from riskstrat.synth.params import FALL_AE_SHARE, FALL_CODED_SHARE, GP_DUPLICATES_KEPT
from riskstrat.synth.simbase import (
    _C,
    _DIAG_INDEX,
    _METHOD,
    _OBS,
    _SETTING,
    _pick,
    _poisson_rows,
    _SimulatorFields,
    _uniform_days,
    _weekday_shift,
)


class _MonthRecording(_SimulatorFields):
    """The simulator's monthly recordings (called from ``_Simulator._month``)."""

    def _length_of_stay(
        self, rng: np.random.Generator, age: FloatArray, frailty: FloatArray
    ) -> IntArray:
        zero = rng.random(age.shape[0]) < np.where(age < 65, 0.25, 0.12)
        mu = np.log(1.2 + 0.035 * age + 14.0 * frailty)
        los = 1 + np.floor(rng.lognormal(mu, 0.85))
        return np.where(zero, 0, np.minimum(los, 180)).astype(np.int64)

    def _record_emergency(
        self,
        rng: np.random.Generator,
        persons: IntArray,
        adm: IntArray,
        dis: IntArray,
        x: HazardInputs,
        h: IntArray,
        age: FloatArray,
        recording: bool,
    ) -> None:
        self.adm_log.add(
            person=persons, start=adm, end=dis, recorded=np.full(persons.shape[0], recording)
        )
        if not recording:
            return
        c = x.conditions[h]
        fell = x.fall_180d[h]
        old = age >= 65

        def cc(code: str) -> FloatArray:
            return c[:, _C[code]].astype(np.float64)

        columns = [
            3.0 * cc("COPD"),  # J44.1
            3.0 * cc("HEART_FAILURE"),  # I50.9
            0.4 + 1.0 * (age >= 75) + 1.0 * cc("DEMENTIA"),  # N39.0
            0.6 + 0.3 * old,  # R55
            2.5 * fell * old + 0.3 * cc("OSTEOPOROSIS") + 0.1 * (age >= 80),  # S72.0
            0.3 + 0.8 * old + cc("COPD"),  # J18.9
            0.8 + 0.8 * cc("CHD"),  # R07.4
            0.7 * cc("CHD"),  # I21.9
            0.8 * cc("AF"),  # I48.9
            0.1 + 0.4 * (age >= 60) + 0.8 * cc("AF") + 0.5 * cc("STROKE_TIA"),  # I63.9
            0.3 + 1.0 * (age < 65),  # R10.4
            0.4,  # A09
            1.5 * cc("ASTHMA") * (age < 60),  # J45.9
            1.5 * cc("DEMENTIA"),  # F05.9
            0.6 * cc("DIABETES"),  # E16.2
            0.6 * cc("DEPRESSION") * (age < 65) + 1.0 * cc("SMI"),  # T43.2
            2.0 * cc("LIVER_DISEASE"),  # K70.3
            1.5 * cc("CANCER"),  # C80.9
            2.0 * cc("EPILEPSY"),  # G40.9
            2.0 * (age < 5),  # J06.9
            0.4,  # L03.1
            0.3 + 0.5 * cc("HEART_FAILURE"),  # R06.0
        ]
        w = np.column_stack(
            [np.broadcast_to(np.asarray(v, np.float64), age.shape) for v in columns]
        )
        diag_local = _pick(rng, w)
        em_codes = np.array([_DIAG_INDEX[d] for d in EMERGENCY_DIAGNOSES])
        diag = np.where(rng.random(h.size) < 0.9, em_codes[diag_local], -1)
        n = persons.shape[0]
        self.act.add(
            person=persons,
            setting=_SETTING["inpatient"],
            method=_METHOD["emergency"],
            start=adm,
            end=dis,
            diag=diag,
            attended=np.full(n, -1),
            linked=1,
        )
        via_ae = rng.random(n) < 0.8
        ae_diag = np.where(rng.random(n) < 0.5, diag, -1)
        self.act.add(
            person=persons[via_ae],
            setting=_SETTING["ae"],
            method=-1,
            start=adm[via_ae],
            end=adm[via_ae],
            diag=ae_diag[via_ae],
            attended=np.full(np.count_nonzero(via_ae), -1),
            linked=1,
        )

    def _record_falls(
        self, rng: np.random.Generator, idx: IntArray, falls: Falls, recording: bool
    ) -> None:
        """Log the month's falls and assessments; code some falls and send some to A&E."""
        who = idx[falls.local]
        day = falls.day
        assess = falls.assessed
        self.fall_log.add(person=who, day=day)
        self.int_log.add(
            person=who[assess],
            code=_OBS["FALLS_ASSESSMENT"],
            day=falls.assessment_day,
            decided=day[assess],
        )
        if not recording:
            return
        n = who.shape[0]
        coded = rng.random(n) < FALL_CODED_SHARE
        self.obs.add(
            person=who[coded],
            day=day[coded],
            code=_OBS["FALL"],
            value=np.full(np.count_nonzero(coded), np.nan),
        )
        self.obs.add(
            person=who[assess],
            day=falls.assessment_day,
            code=_OBS["FALLS_ASSESSMENT"],
            value=np.full(np.count_nonzero(assess), np.nan),
        )
        to_ae = rng.random(n) < FALL_AE_SHARE
        m = np.count_nonzero(to_ae)
        self.act.add(
            person=who[to_ae],
            setting=_SETTING["ae"],
            method=-1,
            start=day[to_ae],
            end=day[to_ae],
            diag=np.where(rng.random(m) < 0.6, _DIAG_INDEX[AE_FALL_DIAGNOSIS], -1),
            attended=np.full(m, -1),
            linked=0,
        )

    def _record_interventions(self, idx: IntArray, iv: Interventions, recording: bool) -> None:
        """Log the month's advance care plans and medication reviews; record them."""
        who_acp = idx[iv.acp_local]
        who_mr = idx[iv.review_local]
        self.int_log.add(
            person=who_acp, code=_OBS["ADVANCE_CARE_PLAN"], day=iv.acp_day, decided=iv.acp_decided
        )
        self.int_log.add(
            person=who_mr, code=_OBS["MEDICATION_REVIEW"], day=iv.review_day, decided=iv.review_day
        )
        if recording:
            self.obs.add(
                person=who_acp,
                day=iv.acp_day,
                code=_OBS["ADVANCE_CARE_PLAN"],
                value=np.full(who_acp.size, np.nan),
            )
            self.obs.add(
                person=who_mr,
                day=iv.review_day,
                code=_OBS["MEDICATION_REVIEW"],
                value=np.full(who_mr.size, np.nan),
            )

    def _contacts(
        self,
        rng: np.random.Generator,
        idx: IntArray,
        x: HazardInputs,
        age: FloatArray,
        lam: FloatArray,
        olo: IntArray,
        ohi: IntArray,
        frac: FloatArray,
        live: BoolArray,
    ) -> None:
        """GP, outpatient, community, A&E (not admitted), elective and maternity activity."""
        st = self.state
        f = x.frailty
        c = x.conditions
        n_cond = c.sum(axis=1)
        cancer = c[:, _C["CANCER"]]
        dep = x.deprivation
        housebound = st.housebound_from[idx] <= olo
        frac = np.where(live, frac, 0.0)

        def add(
            setting: str,
            annual: FloatArray,
            *,
            attended_p: FloatArray | None = None,
            diag_codes: tuple[str, ...] | None = None,
            diag_p: float = 0.0,
            method: str | None = None,
            day_case: float = 1.0,
            weekdays: bool = False,
        ) -> None:
            pers, days = _poisson_rows(rng, np.arange(idx.shape[0]), olo, ohi, annual / 12.0 * frac)
            m = pers.shape[0]
            if m == 0:
                return
            if weekdays:
                days = np.clip(_weekday_shift(days), olo[pers], ohi[pers] - 1)
            if setting == "gp":
                # Most same-day repeats are merged; a few duplicates remain, as in real data.
                order = np.lexsort((days, pers))
                dup = np.zeros(m, dtype=bool)
                dup[order[1:]] = (pers[order[1:]] == pers[order[:-1]]) & (
                    days[order[1:]] == days[order[:-1]]
                )
                keep = ~dup | (rng.random(m) < GP_DUPLICATES_KEPT)
                pers, days = pers[keep], days[keep]
                m = pers.shape[0]
            att = np.full(m, -1)
            if attended_p is not None:
                att = (rng.random(m) >= attended_p[pers]).astype(np.int64)
            diag = np.full(m, -1)
            if diag_codes is not None:
                codes = np.array([_DIAG_INDEX[d] for d in diag_codes])
                pick = codes[rng.integers(0, len(codes), size=m)]
                diag = np.where(rng.random(m) < diag_p, pick, -1)
            if setting == "inpatient":
                # Day cases end the day they start; other stays last one to three nights.
                stay = np.where(rng.random(m) < day_case, 0, rng.integers(1, 4, size=m))
                end = days + stay
            elif setting == "ae":
                end = days
            else:
                end = np.full(m, -1)
            self.act.add(
                person=idx[pers],
                setting=_SETTING[setting],
                method=_METHOD[method] if method else -1,
                start=days,
                end=end,
                diag=diag,
                attended=att,
                linked=0,
            )

        gp_annual = 2.0 + 0.055 * age + 1.1 * n_cond + 14.0 * f + 3.0 * (age < 5) + 0.8 * (~x.male)
        add(
            "gp",
            gp_annual,
            attended_p=0.035 + 0.02 * np.maximum(dep, 0.0) + 0.02 * (age < 30),
            weekdays=True,
        )
        op_annual = 0.5 + 0.015 * age + 0.35 * n_cond + 2.0 * cancer
        add("outpatient", op_annual, attended_p=0.06 + 0.04 * np.maximum(dep, 0.0), weekdays=True)
        comm_annual = (
            0.05 + 25.0 * f**2 + 6.0 * housebound + 4.0 * x.care_home + 4.0 * c[:, _C["PALLIATIVE"]]
        )
        add("community", comm_annual, weekdays=True)
        ae_base = np.interp(
            age,
            [0, 5, 15, 16, 30, 31, 65, 80, 100],
            [0.45, 0.3, 0.25, 0.35, 0.35, 0.22, 0.22, 0.3, 0.4],
        )
        ae_annual = (
            ae_base * (1.0 + 0.3 * dep)
            + 2.5 * 12.0 * lam
            + 1.5 * x.homeless
            + 0.8 * x.alcohol_misuse
        )
        add("ae", ae_annual, diag_codes=AE_DIAGNOSES, diag_p=0.45)
        el_annual = 0.02 + 0.002 * age + 0.03 * n_cond + 1.2 * cancer
        add(
            "inpatient",
            el_annual,
            method="elective",
            diag_codes=ELECTIVE_DIAGNOSES,
            diag_p=0.85,
            day_case=0.65,
            weekdays=True,
        )
        fertile = (~x.male) & (st.people.sex_code[idx] == "F") & (age >= 17) & (age < 45)
        mat_annual = np.where(
            fertile, np.interp(age, [17, 25, 32, 40, 45], [0.03, 0.08, 0.10, 0.03, 0.0]), 0.0
        )
        add(
            "inpatient",
            mat_annual,
            method="maternity",
            diag_codes=MATERNITY_DIAGNOSES,
            diag_p=0.9,
            day_case=0.2,
        )

    def _loop_observations(
        self,
        rng: np.random.Generator,
        idx: IntArray,
        x: HazardInputs,
        age: FloatArray,
        olo: IntArray,
        ohi: IntArray,
        frac: FloatArray,
        live: BoolArray,
    ) -> None:
        """Frailty-dependent observations recorded in the month: CFS, mobility, weight loss."""
        k = idx.shape[0]
        f = x.frailty
        c = x.conditions

        def emit(code: str, monthly: FloatArray, value: FloatArray | None = None) -> None:
            hit = np.flatnonzero(live & (rng.random(k) < 1.0 - np.exp(-monthly * frac)))
            day = _uniform_days(rng, olo[hit], ohi[hit])
            v = np.full(hit.size, np.nan) if value is None else value[hit]
            self.obs.add(person=idx[hit], day=day, code=_OBS[code], value=v)

        cfs_rate = np.where(
            (age >= 75) & (f > 0.12), 0.03 + 0.03 * x.care_home, np.where(age >= 65, 0.004, 0.0)
        )
        cfs = np.clip(np.round(2.0 + 12.0 * f + rng.normal(0.0, 0.6, size=k)), 1, 9)
        emit("CFS", cfs_rate, cfs)
        emit("MOBILITY_PROBLEM", np.where(age >= 50, 0.12 * np.clip((f - 0.08) / 0.22, 0, 1), 0.0))
        wl = (
            0.0005 * (age >= 60)
            + 0.04 * np.clip((f - 0.15) / 0.25, 0, 1)
            + 0.015 * c[:, _C["CANCER"]]
            + 0.03 * c[:, _C["PALLIATIVE"]]
            + 0.006 * c[:, _C["DEMENTIA"]]
        )
        emit("WEIGHT_LOSS", wl)

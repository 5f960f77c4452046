"""What the simulator does after the monthly loop: registration ended by death, repeat
prescriptions and courses, the recordings of states and one-off findings, and the contract
tables and hidden event log built from everything recorded. A part of the simulator
(:mod:`riskstrat.synth.simulation`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pandas as pd

from riskstrat.data.contract import ADMISSION_METHODS, CONDITIONS, OBSERVATION_CODES, SETTINGS
from riskstrat.synth.catalogue import (
    ANTIBIOTIC_COURSES,
    REGIMEN_GROUPS,
    STEROID_COURSE,
    Medicine,
)
from riskstrat.synth.hazards import BoolArray, FloatArray, IntArray
from riskstrat.synth.params import _logit, _sigmoid
from riskstrat.synth.population import DAYS_PER_YEAR, NEVER
from riskstrat.synth.simbase import (
    _ALL_DIAGNOSES,
    _C,
    _OBS,
    _masked,
    _poisson_rows,
    _SimulatorFields,
    _sort_order,
)

_RX_EFFECT = 1.1  # log-odds of each regimen per SD of prescribing intensity
#: Log-odds added to every background regimen and per long-term condition ever diagnosed,
#: so that polypharmacy in the oldest reaches its real level (10+ medicines: 15-25% of 75+).
_BACKGROUND_SHIFT = 0.7
_BACKGROUND_PER_CONDITION = 0.2


class _Assembly(_SimulatorFields):
    """The simulator's work after the monthly loop, down to the contract tables."""

    def finalise_registration(self) -> None:
        """Deaths known before the extract date end registration a few weeks later."""
        st = self.state
        p = st.people
        rng = self.rng_out
        died = st.death_day < self.extract
        dereg = st.death_day + rng.integers(0, 31, size=self.n)
        new = np.minimum(p.reg_to, dereg)
        p.reg_to = np.where(died, np.where(new < self.extract, new, NEVER), p.reg_to)
        self.died = died
        self.rec_lo = np.maximum(self.hs, p.reg_from)
        rec_hi = np.minimum(self.extract, p.reg_to)
        self.rec_hi = np.where(died, np.minimum(rec_hi, st.death_day + 1), rec_hi)
        # SUS-linked rows run on after deregistration, for as long as the person lives.
        self.life_hi = np.where(died, st.death_day + 1, self.extract)

    def medications(self) -> dict[str, npt.NDArray[np.generic]]:
        """Repeat prescriptions following conditions and background needs, plus courses."""
        rng = self.rng_med
        st = self.state
        p = st.people
        n = self.n
        onset = st.onset
        ever = onset < NEVER
        n_ever = ever.sum(axis=1)
        z_std = (st.frailty_propensity + 0.125) / 0.5
        rx = st.prescribing_intensity
        med_names: list[Medicine] = []
        med_id: dict[Medicine, int] = {}

        def mid(m: Medicine) -> int:
            if m not in med_id:
                med_id[m] = len(med_names)
                med_names.append(m)
            return med_id[m]

        persons: list[IntArray] = []
        starts: list[IntArray] = []
        stops: list[IntArray] = []
        intervals: list[IntArray] = []
        meds: list[IntArray] = []
        for g in REGIMEN_GROUPS:
            if g.trigger:
                cand = np.flatnonzero(ever[:, _C[g.trigger]])
                start = onset[cand, _C[g.trigger]].astype(np.int64)
                start = start + rng.integers(0, 45, size=cand.size)
            else:
                z = (
                    _logit(g.lifetime)
                    + _BACKGROUND_SHIFT
                    + _BACKGROUND_PER_CONDITION * n_ever
                    + g.male * p.male
                    + g.frailty * z_std
                    + g.per_condition * n_ever
                    + _RX_EFFECT * rx
                )
                for code, beta in g.conditions:
                    z = z + beta * ever[:, _C[code]]
                lifetime = _sigmoid(z)
                u = rng.random(n)
                has = u < lifetime
                if g.sex:
                    has &= p.sex_code == g.sex
                q = np.clip(u / lifetime, 1e-9, 1 - 1e-9)
                age = np.maximum(g.a50 + g.scale * np.log(q / (1 - q)), g.min_age)
                cand = np.flatnonzero(has)
                start = p.dob[cand] + np.round(age[cand] * DAYS_PER_YEAR).astype(np.int64)
            probs = np.array([pr for _, pr in g.options])
            total = float(probs.sum())
            if total < 1.0:
                p_any = _sigmoid(_logit(total) + _RX_EFFECT * rx[cand])
            else:
                p_any = np.ones(cand.size)
            r = rng.random(cand.size)
            take = r < p_any
            # Which option, given one is taken: proportional to the catalogue's shares.
            r2 = rng.random(cand.size) * total
            option = np.minimum(
                np.searchsorted(np.cumsum(probs), r2, side="right"), len(g.options) - 1
            )
            ids = np.array([mid(m) for m, _ in g.options])
            cand, start, option = cand[take], start[take], option[take]
            interval = np.where(
                rng.random(cand.size) < g.long_interval_share, 2 * g.interval_days, g.interval_days
            )
            if g.mean_duration_months is None:
                stop = np.full(cand.size, NEVER, np.int64)
            else:
                dur = rng.exponential(g.mean_duration_months * 30.44, size=cand.size)
                stop = start + 28 + np.floor(dur).astype(np.int64)
            persons.append(cand)
            starts.append(start)
            stops.append(stop)
            intervals.append(interval.astype(np.int64))
            meds.append(ids[option])
        per = np.concatenate(persons)
        st_ = np.concatenate(starts)
        sp = np.concatenate(stops)
        iv = np.concatenate(intervals)
        md = np.concatenate(meds)
        # One regimen per person and medicine: earliest start, latest stop.
        order = np.lexsort((st_, md, per))
        per, st_, sp, iv, md = per[order], st_[order], sp[order], iv[order], md[order]
        first = np.ones(per.size, dtype=bool)
        first[1:] = (per[1:] != per[:-1]) | (md[1:] != md[:-1])
        bounds = np.flatnonzero(first)
        sp = np.maximum.reduceat(sp, bounds) if bounds.size else sp
        per, st_, iv, md = per[bounds], st_[bounds], iv[bounds], md[bounds]
        # Issue dates in the recorded window.
        lo = np.maximum(st_, self.rec_lo[per])
        hi = np.minimum(sp, self.rec_hi[per])
        ok = hi > lo
        per, st_, iv, md, lo, hi = per[ok], st_[ok], iv[ok], md[ok], lo[ok], hi[ok]
        k0 = -((st_ - lo) // iv)  # ceil((lo - start) / interval)
        k1 = (hi - 1 - st_) // iv
        cnt = np.maximum(k1 - k0 + 1, 0)
        rep = np.repeat(np.arange(per.size), cnt)
        offs = np.concatenate([[0], np.cumsum(cnt)[:-1]])
        kk = k0[rep] + (np.arange(rep.size) - offs[rep])
        day = st_[rep] + kk * iv[rep] + rng.integers(-3, 4, size=rep.size)
        keep = (day >= lo[rep]) & (day < hi[rep]) & (rng.random(rep.size) >= 0.03)
        out_p = [per[rep][keep]]
        out_d = [day[keep]]
        out_m = [md[rep][keep]]

        # Acute courses: antibiotics for everyone, steroid rescue for COPD and asthma.
        everyone = np.arange(n)
        mid_day = (self.rec_lo + self.rec_hi) // 2
        age = np.maximum((mid_day - p.dob) / DAYS_PER_YEAR, 0.0)
        has = onset <= mid_day[:, None]
        years = np.maximum(self.rec_hi - self.rec_lo, 0) / DAYS_PER_YEAR
        care_home = st.care_home_from <= mid_day
        abx = (
            0.25
            + 0.3 * (age < 5)
            + 0.01 * np.maximum(age - 50.0, 0.0)
            + 0.7 * has[:, _C["COPD"]]
            + 0.2 * has[:, _C["DIABETES"]]
            + 0.5 * care_home
            + 0.3 * (~p.male)
        )
        who, day = _poisson_rows(rng, everyone, self.rec_lo, self.rec_hi, abx * years)
        shares = np.array([s for _, s in ANTIBIOTIC_COURSES])
        ab_ids = np.array([mid(m) for m, _ in ANTIBIOTIC_COURSES])
        out_p.append(who)
        out_d.append(day)
        out_m.append(ab_ids[rng.choice(len(shares), size=who.size, p=shares / shares.sum())])
        ster = 0.8 * has[:, _C["COPD"]] + 0.2 * has[:, _C["ASTHMA"]]
        who, day = _poisson_rows(rng, everyone, self.rec_lo, self.rec_hi, ster * years)
        out_p.append(who)
        out_d.append(day)
        out_m.append(np.full(who.size, mid(STEROID_COURSE)))

        self.medicines = med_names
        return {
            "person": np.concatenate(out_p),
            "day": np.concatenate(out_d),
            "med": np.concatenate(out_m),
        }

    def static_observations(self) -> None:
        """Recordings of states and one-off findings over each person's recorded window."""
        rng = self.rng_obs
        st = self.state
        p = st.people
        n = self.n
        lo, hi = self.rec_lo, self.rec_hi
        mid_day = (lo + hi) // 2
        age = np.maximum((mid_day - p.dob) / DAYS_PER_YEAR, 0.0)
        f = st.frailty_at_extract
        ever = st.onset < NEVER
        n_cond = ever.sum(axis=1)

        def record(
            code: str,
            who: BoolArray,
            rate: FloatArray | float,
            since: IntArray | None = None,
            at_start: float = 0.0,
            value: Callable[[IntArray], FloatArray] | None = None,
        ) -> None:
            w = np.flatnonzero(who)
            wlo = lo[w] if since is None else np.maximum(lo[w], since[w])
            whi = hi[w]
            r = rate[w] if isinstance(rate, np.ndarray) else np.full(w.size, rate)
            pers, days = _poisson_rows(rng, w, wlo, whi, r * np.maximum(whi - wlo, 0) / 365.25)
            if since is not None and at_start > 0:
                first = (since[w] >= lo[w]) & (since[w] < whi) & (rng.random(w.size) < at_start)
                pers = np.concatenate([pers, w[first]])
                late = rng.integers(0, 15, size=np.count_nonzero(first))
                days = np.concatenate([days, since[w][first] + late])
            v = np.full(pers.size, np.nan) if value is None else value(pers)
            self.obs.add(person=pers, day=days, code=_OBS[code], value=v)

        old = age >= 75
        record("LIVES_ALONE", st.lives_alone, 0.3 + 0.3 * old + 0.4 * (f > 0.24))
        record("SMOKER", st.smoker, 0.3 + 0.4 * (n_cond > 0))
        record("CARE_HOME", st.care_home_from < hi, 0.8, since=st.care_home_from, at_start=0.9)
        record("HOUSEBOUND", st.housebound_from < hi, 0.7, since=st.housebound_from, at_start=0.6)
        record("HAS_CARER", st.has_carer_from < hi, 0.7, since=st.has_carer_from, at_start=0.5)
        record(
            "HOME_CARE_PACKAGE",
            (st.home_care_from < hi) & (st.care_home_from >= hi),
            0.5,
            since=st.home_care_from,
            at_start=0.6,
        )
        record("HOMELESS", st.homeless, 0.6)
        record("ALCOHOL_MISUSE", st.alcohol_misuse, 0.35)
        is_carer = (age >= 30) & (age < 80) & (rng.random(n) < 0.05)
        record("IS_CARER", is_carer, 0.2)
        isolated = st.lives_alone & (rng.random(n) < 0.15 + 0.7 * np.clip(f / 0.35, 0, 1))
        record("SOCIAL_ISOLATION", isolated & (age >= 50), 0.5)
        # Impairments: with age and, above all, with frailty (they are eFI deficits).
        incont = rng.random(n) < _sigmoid(-6.3 + 0.05 * (age - 40.0) + 19.0 * f)
        record("INCONTINENCE", incont & (age >= 40), 1.0)
        visual = rng.random(n) < _sigmoid(-5.2 + 0.06 * (age - 40.0) + 15.0 * f)
        record("VISUAL_IMPAIRMENT", visual, 1.0)
        hearing = rng.random(n) < _sigmoid(-4.0 + 0.07 * (age - 40.0) + 12.0 * f)
        record("HEARING_IMPAIRMENT", hearing, 1.0)
        # Memory concerns: before most dementia diagnoses, and now and then in older people.
        dem = st.onset[:, _C["DEMENTIA"]].astype(np.int64)
        pre = (dem < NEVER) & (rng.random(n) < 0.55)
        before = dem - rng.integers(30, 540, size=n)
        w = np.flatnonzero(pre & (before >= lo) & (before < hi))
        self.obs.add(
            person=w, day=before[w], code=_OBS["MEMORY_CONCERN"], value=np.full(w.size, np.nan)
        )
        record(
            "MEMORY_CONCERN",
            (age >= 65) & (dem == NEVER),
            0.01 + 0.02 * (age >= 80) + 0.3 * np.clip((f - 0.2) / 0.3, 0.0, 1.0),
        )
        # BMI: adults, more often with long-term conditions; lower when frail.
        has_dm = ever[:, _C["DIABETES"]]
        bmi_mean = (
            27.5
            + 2.5 * has_dm
            - 7.0 * np.clip(f - 0.25, 0, 0.4)
            - 0.05 * np.maximum(age - 75.0, 0.0)
        )
        bmi_person = bmi_mean + rng.normal(0.0, 4.5, size=n)

        def bmi(pers: IntArray) -> FloatArray:
            v = bmi_person[pers] + rng.normal(0.0, 0.8, size=pers.size)
            rounded: FloatArray = np.round(np.clip(v, 14.0, 60.0), 1)
            return rounded

        record("BMI", age >= 16, 0.12 + 0.15 * (n_cond > 0) + 0.5 * has_dm, value=bmi)

    # ------------------------------------------------------------------ tables
    def tables(self, med: dict[str, npt.NDArray[np.generic]]) -> dict[str, pd.DataFrame]:
        """Filter rows to the recorded windows, sort them and build the contract tables."""
        st = self.state
        p = st.people
        order = np.argsort(self.nhs, kind="stable")
        rank = np.empty(self.n, dtype=np.int64)
        rank[order] = np.arange(self.n)
        sorted_nhs = self.nhs[order]
        nhs_cat = pd.CategoricalDtype(categories=pd.Index(sorted_nhs, dtype="str"))

        def nhs_col(person: IntArray) -> pd.Categorical:
            return pd.Categorical.from_codes(rank[person], dtype=nhs_cat)

        def cat(codes: IntArray, vocab: tuple[str, ...] | list[str]) -> pd.Categorical:
            dtype = pd.CategoricalDtype(pd.Index(list(vocab), dtype="str"))
            return pd.Categorical.from_codes(codes, dtype=dtype)

        def dates(days: IntArray, missing: BoolArray | None = None) -> npt.NDArray[np.generic]:
            d = np.where(missing, 0, days) if missing is not None else days
            out = d.astype("datetime64[D]").astype("datetime64[s]")
            if missing is not None:
                out[missing] = np.datetime64("NaT")
            return out

        def in_window(person: IntArray, day: IntArray) -> BoolArray:
            return (day >= self.rec_lo[person]) & (day < self.rec_hi[person])

        # patients
        died = self.died
        reg_to_missing = p.reg_to >= NEVER
        ethnic = _masked(p.ethnic_category, p.ethnic_category != "", "str")
        lsoa = _masked(self.practices.lsoa_code[p.lsoa], p.lsoa_recorded, "str")
        imd = _masked(p.imd_recorded, p.imd_recorded > 0, "Int8")
        opt = _masked(p.type1_opt_out == 1, p.type1_opt_out >= 0, "boolean")
        patients = (
            pd.DataFrame(
                {
                    "nhs_number": pd.array(self.nhs, dtype="str"),
                    "date_of_birth": dates(p.dob),
                    "sex": pd.array(p.sex_code, dtype="str"),
                    "ethnic_category": ethnic,
                    "lsoa_code": lsoa,
                    "imd_decile": imd,
                    "practice_code": pd.array(
                        self.practices.practice_code[p.practice], dtype="str"
                    ),
                    "pcn_code": pd.array(self.practices.pcn_code[p.practice], dtype="str"),
                    "registered_from": dates(p.reg_from),
                    "registered_to": dates(p.reg_to, reg_to_missing),
                    "date_of_death": dates(st.death_day, ~died),
                    "type1_opt_out": opt,
                }
            )
            .iloc[order]
            .reset_index(drop=True)
        )

        # activity
        a = self.act.build()
        person = a["person"].astype(np.int64)
        start = a["start"].astype(np.int64)
        hi = np.where(a["linked"] == 1, self.life_hi[person], self.rec_hi[person])
        keep = (start >= self.rec_lo[person]) & (start < hi)
        a = {k: v[keep] for k, v in a.items()}
        person = a["person"].astype(np.int64)
        start = a["start"].astype(np.int64)
        end = a["end"].astype(np.int64)
        setting = a["setting"].astype(np.int64)
        end_missing = (end < 0) | (end >= self.extract)
        srt = _sort_order(rank[person], start, setting, a["method"].astype(np.int64) + 1)
        method = a["method"].astype(np.int64)[srt]
        diag = a["diag"].astype(np.int64)[srt]
        attended = a["attended"].astype(np.int64)[srt]
        activity = pd.DataFrame(
            {
                "nhs_number": nhs_col(person[srt]),
                "setting": cat(setting[srt], SETTINGS),
                "admission_method": cat(method, ADMISSION_METHODS),
                "start_date": dates(start[srt]),
                "end_date": dates(end[srt], end_missing[srt]),
                "primary_diagnosis": cat(diag, _ALL_DIAGNOSES),
                "attended": _masked(attended == 1, attended >= 0, "boolean"),
            }
        )

        # conditions
        rows, cols = np.nonzero(st.onset < NEVER)
        on = st.onset[rows, cols].astype(np.int64)
        keep = on < self.rec_hi[rows]
        rows, cols, on = rows[keep], cols[keep], on[keep]
        srt = _sort_order(rank[rows], on, cols.astype(np.int64))
        conditions = pd.DataFrame(
            {
                "nhs_number": nhs_col(rows[srt]),
                "condition": cat(cols[srt], CONDITIONS),
                "diagnosed_on": dates(on[srt]),
            }
        )

        # medications
        mp = med["person"].astype(np.int64)
        mday = med["day"].astype(np.int64)
        mm = med["med"].astype(np.int64)
        keep = in_window(mp, mday)
        mp, mday, mm = mp[keep], mday[keep], mm[keep]
        names = [m.name for m in self.medicines]
        classes = sorted({m.drug_class for m in self.medicines})
        # Sort medicines by name so the tie-break order does not depend on catalogue order.
        name_order = np.argsort(np.array(names), kind="stable")
        name_rank = np.empty(len(names), dtype=np.int64)
        name_rank[name_order] = np.arange(len(names))
        srt = _sort_order(rank[mp], mday, name_rank[mm])
        class_idx = np.array([classes.index(m.drug_class) for m in self.medicines])
        medications = pd.DataFrame(
            {
                "nhs_number": nhs_col(mp[srt]),
                "issued_on": dates(mday[srt]),
                "medicine": cat(name_rank[mm[srt]], [names[i] for i in name_order]),
                "drug_class": cat(class_idx[mm[srt]], classes),
            }
        )

        # observations
        o = self.obs.build()
        op = o["person"].astype(np.int64)
        oday = o["day"].astype(np.int64)
        keep = in_window(op, oday)
        op, oday = op[keep], oday[keep]
        ocode = o["code"].astype(np.int64)[keep]
        oval = o["value"].astype(np.float64)[keep]
        srt = _sort_order(rank[op], oday, ocode)
        oval = oval[srt]
        observations = pd.DataFrame(
            {
                "nhs_number": nhs_col(op[srt]),
                "observed_on": dates(oday[srt]),
                "code": cat(ocode[srt], OBSERVATION_CODES),
                "value": _masked(oval, ~np.isnan(oval), "Float64"),
            }
        )
        return {
            "patients": patients,
            "activity": activity,
            "conditions": conditions,
            "medications": medications,
            "observations": observations,
        }

    def events(self) -> dict[str, pd.DataFrame]:
        """The hidden event log (all simulated events, written or not)."""
        a = self.adm_log.build()
        f = self.fall_log.build()
        i = self.int_log.build()
        return {
            "emergency_admissions": pd.DataFrame(
                {
                    "person": a["person"].astype(np.int64),
                    "start_day": a["start"].astype(np.int64),
                    "end_day": a["end"].astype(np.int64),
                    "recorded": a["recorded"].astype(bool),
                }
            ),
            "falls": pd.DataFrame(
                {"person": f["person"].astype(np.int64), "day": f["day"].astype(np.int64)}
            ),
            "interventions": pd.DataFrame(
                {
                    "person": i["person"].astype(np.int64),
                    "code": pd.Categorical.from_codes(
                        i["code"].astype(np.int64),
                        dtype=pd.CategoricalDtype(pd.Index(OBSERVATION_CODES, dtype="str")),
                    ),
                    "day": i["day"].astype(np.int64),
                    "decided": i["decided"].astype(np.int64),
                }
            ),
        }

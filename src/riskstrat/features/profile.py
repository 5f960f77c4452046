"""A realism profile of any extract: who is in it, what they have, and how admissions behave.

``profile_extract`` runs DuckDB SQL over a validated extract, real or synthetic, and returns
one row per measure with a reference range. The ranges come from England's published figures
(census 2021, QOF registers, ONS deaths) and from the product's source programme, so a
synthetic population can be checked against them and a real extract can be read beside them.

Windows: ``index_date`` is the latest month whose 90-day outcome window is complete; "the
year" is the 365 days before the extract date, for the people registered and alive on its
first day.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from typing import Any

import duckdb

from riskstrat.calendar import latest_complete_month
from riskstrat.features.build import build_features

_AGE_BANDS = ("0-17", "18-44", "45-64", "65-74", "75-84", "85+")
_ENGLAND_AGE = {  # England, census 2021 (approximate shares, %)
    "0-17": (17.0, 25.0), "18-44": (30.0, 40.0), "45-64": (21.0, 29.0),
    "65-74": (8.0, 12.0), "75-84": (5.0, 8.0), "85+": (1.8, 3.2),
}  # fmt: skip
_ETHNIC = {  # England, census 2021, among those recorded (%)
    "White": (75.0, 87.0), "Asian": (6.0, 13.0), "Black": (2.5, 6.0),
    "Mixed": (2.0, 4.5), "Other": (1.0, 3.5),
}  # fmt: skip
_LTC = {  # registered-population prevalence (%), QOF-like
    "HYPERTENSION": (11.0, 17.0), "DIABETES": (5.0, 9.0), "CKD": (2.5, 5.0),
    "CHD": (2.2, 4.0), "AF": (1.5, 3.0), "COPD": (1.4, 2.8), "HEART_FAILURE": (0.6, 1.6),
    "DEMENTIA": (0.5, 1.1), "CANCER": (2.0, 4.5), "STROKE_TIA": (1.4, 2.6),
}  # fmt: skip


@dataclass(frozen=True)
class Measure:
    """One line of the profile."""

    section: str
    name: str
    value: float | None
    unit: str
    reference: str
    ok: bool | None  # None: no reference to check against

    @property
    def shown(self) -> str:
        if self.value is None:
            return "n/a"
        if self.unit == "%":
            return f"{self.value:.2f}%"
        if self.unit == "count":
            return f"{self.value:,.0f}"
        return f"{self.value:.2f}{(' ' + self.unit) if self.unit else ''}"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "shown": self.shown}


@dataclass(frozen=True)
class Profile:
    extract_date: date
    index_date: date
    year_start: date
    measures: list[Measure]

    @property
    def checked(self) -> list[Measure]:
        return [m for m in self.measures if m.ok is not None]

    @property
    def failures(self) -> list[Measure]:
        return [m for m in self.measures if m.ok is False]


def _in(value: float | None, lo: float, hi: float) -> bool | None:
    return None if value is None else lo <= value <= hi


def _scalar(
    con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None
) -> float | None:
    row = con.execute(sql, params or []).fetchall()
    value = row[0][0] if row else None
    return None if value is None else float(value)


def _pop_sql(when: str) -> str:
    """People registered and alive on a date (a SQL expression of type DATE)."""
    return (
        f"SELECT * FROM patients WHERE registered_from <= {when} "
        f"AND (registered_to IS NULL OR registered_to > {when}) "
        f"AND (date_of_death IS NULL OR date_of_death >= {when}) AND date_of_birth <= {when}"
    )


def _age_band_sql(age: str) -> str:
    return (
        f"CASE WHEN {age} < 18 THEN '0-17' WHEN {age} < 45 THEN '18-44' "
        f"WHEN {age} < 65 THEN '45-64' WHEN {age} < 75 THEN '65-74' "
        f"WHEN {age} < 85 THEN '75-84' ELSE '85+' END"
    )


def profile_extract(con: duckdb.DuckDBPyConnection, *, extract_date: date) -> Profile:
    """Measure the realism profile of the validated extract held in ``con``."""
    index_date = latest_complete_month(extract_date, 90)
    year_start = extract_date - timedelta(days=365)
    out: list[Measure] = []

    def add(
        section: str,
        name: str,
        value: float | None,
        unit: str = "%",
        ref: tuple[float, float] | None = None,
        reference: str = "",
        ok: bool | None = None,
    ) -> None:
        if ref is not None:
            ok = _in(value, *ref)
            reference = reference or f"{ref[0]:g}-{ref[1]:g}{unit if unit == '%' else ''}"
        out.append(Measure(section, name, value, unit, reference, ok))

    feats = build_features(con, index_dates=[index_date])
    con.register("_profile_features", feats)
    try:
        _population(con, feats, add, index_date)
        _conditions(con, add)
        _medicines_frailty(con, add, year_start, extract_date)
        _admissions(con, add, index_date, year_start, extract_date)
        _registration(con, add, year_start, extract_date)
    finally:
        con.unregister("_profile_features")
    return Profile(extract_date, index_date, year_start, out)


def _population(con: duckdb.DuckDBPyConnection, feats: Any, add: Any, index_date: date) -> None:
    s = "population"
    n = len(feats)
    add(s, f"people registered and alive on {index_date}", float(n), "count")
    shares = dict(
        con.execute(
            "SELECT age_band, 100.0 * count(*) / sum(count(*)) OVER () FROM _profile_features "
            "GROUP BY 1"
        ).fetchall()
    )
    for band in _AGE_BANDS:
        add(s, f"aged {band}", shares.get(band, 0.0), ref=_ENGLAND_AGE[band])
    add(s, "female", 100.0 * float(feats["sex_female"].mean()), ref=(48.5, 52.5))
    add(
        s,
        "ethnicity not stated",
        100.0 * float((feats["ethnic_group"] == "Not stated").mean()),
        ref=(5.0, 10.0),
    )
    recorded = feats[feats["ethnic_group"] != "Not stated"]["ethnic_group"].value_counts(
        normalize=True
    )
    for group, ref in _ETHNIC.items():
        add(
            s,
            f"ethnic group {group} (of recorded)",
            100.0 * float(recorded.get(group, 0.0)),
            ref=ref,
        )
    add(s, "IMD decile missing", 100.0 * float(feats["imd_decile"].isna().mean()), ref=(0.5, 5.0))
    spread = _scalar(
        con,
        "SELECT stddev_samp(m) FROM (SELECT avg(imd_decile) AS m FROM "
        "_profile_features WHERE imd_decile IS NOT NULL GROUP BY practice_code "
        "HAVING count(*) >= 50)",
    )
    add(
        s,
        "spread of practice mean IMD decile (SD)",
        spread,
        "deciles",
        ref=(1.0, 4.0),
        reference=">= 1 (practices differ)",
    )
    add(s, "practices", float(feats["practice_code"].nunique()), "count")
    add(s, "PCNs", float(feats["pcn_code"].nunique()), "count")


def _conditions(con: duckdb.DuckDBPyConnection, add: Any) -> None:
    s = "conditions"
    prevalence = {}
    for code, ref in _LTC.items():
        value = _scalar(con, f"SELECT 100.0 * avg(ltc_{code.lower()}) FROM _profile_features")
        prevalence[code] = value or 0.0
        add(s, f"{code.lower().replace('_', ' ')} prevalence", value, ref=ref)
    top = max(prevalence, key=lambda c: prevalence[c])
    add(s, "most prevalent of these", None, "", reference="hypertension", ok=top == "HYPERTENSION")
    share_by_band = dict(
        con.execute(
            "SELECT age_band, 100.0 * avg(CASE WHEN ltc_count > 0 THEN 1 ELSE 0 END) "
            "FROM _profile_features GROUP BY 1"
        ).fetchall()
    )
    by_age = [share_by_band.get(b, 0.0) for b in _AGE_BANDS]
    # The oldest bands are both near 90%: allow a point of sampling noise between neighbours.
    rising = all(b >= a - 1.0 for a, b in itertools.pairwise(by_age))
    add(s, "1+ LTC rises across age bands", None, "", reference="rises (+-1 point)", ok=rising)
    by_imd = dict(
        con.execute(
            "SELECT imd_quintile, 100.0 * avg(CASE WHEN ltc_count > 0 THEN 1 ELSE 0 END) "
            "FROM _profile_features WHERE imd_quintile <> 'Not known' GROUP BY 1"
        ).fetchall()
    )
    if "1" in by_imd and "5" in by_imd:
        add(s, "1+ LTC, most deprived quintile", by_imd["1"])
        add(s, "1+ LTC, least deprived quintile", by_imd["5"])
        # Age-standardised comparison: within 45-64 and 65+, more deprived has more LTCs.
        adj = con.execute(
            "SELECT avg(CASE WHEN imd_quintile = '1' THEN ltc_count END) "
            "- avg(CASE WHEN imd_quintile = '5' THEN ltc_count END) FROM _profile_features "
            "WHERE age_years >= 45"
        ).fetchall()[0][0]
        add(
            s,
            "LTC count gap, most minus least deprived (45+)",
            None if adj is None else float(adj),
            "conditions",
            reference="> 0",
            ok=None if adj is None else adj > 0,
        )
    add(
        s,
        "2+ LTCs among 65+",
        _scalar(
            con,
            "SELECT 100.0 * avg(CASE WHEN ltc_count >= 2 THEN 1 ELSE 0 END) "
            "FROM _profile_features WHERE age_years >= 65",
        ),
        ref=(35.0, 75.0),
    )
    lift = _scalar(
        con,
        "SELECT avg(CASE WHEN ltc_af = 1 THEN ltc_heart_failure END) "
        "/ nullif(avg(ltc_heart_failure), 0) FROM _profile_features",
    )
    add(
        s,
        "heart failure among people with AF, relative to all",
        lift,
        "x",
        ref=(2.0, 50.0),
        reference=">= 2 (conditions co-occur)",
    )


def _medicines_frailty(
    con: duckdb.DuckDBPyConnection, add: Any, year_start: date, extract_date: date
) -> None:
    s = "medicines, frailty and care"
    add(
        s,
        "10+ distinct medicines in 90 days, aged 75+",
        _scalar(
            con,
            "SELECT 100.0 * avg(CASE WHEN distinct_medicines_90d >= 10 THEN 1 ELSE 0 END) "
            "FROM _profile_features WHERE age_years >= 75",
        ),
        ref=(15.0, 25.0),
    )
    add(
        s,
        "moderate or severe frailty (eFI > 0.24), aged 65+",
        _scalar(
            con,
            "SELECT 100.0 * avg(CASE WHEN efi > 0.24 THEN 1 ELSE 0 END) FROM _profile_features "
            "WHERE age_years >= 65",
        ),
        ref=(8.0, 30.0),
    )
    means = [
        v
        for _, v in con.execute(
            "SELECT age_band, avg(efi) FROM _profile_features WHERE age_years >= 65 "
            "GROUP BY 1 ORDER BY 1"
        ).fetchall()
    ]
    add(
        s,
        "mean eFI rises 65-74 -> 75-84 -> 85+",
        None,
        "",
        reference="rises",
        ok=len(means) == 3 and means[0] < means[1] < means[2],
    )
    pop = _pop_sql("DATE '" + year_start.isoformat() + "'")
    old = (
        f"SELECT nhs_number FROM ({pop}) "
        f"WHERE date_sub('year', date_of_birth, DATE '{year_start}') >= 65"
    )
    add(
        s,
        "fall recorded in the year, aged 65+",
        _scalar(
            con,
            f"SELECT 100.0 * count(DISTINCT o.nhs_number) / (SELECT count(*) FROM ({old})) "
            f"FROM observations o WHERE o.code = 'FALL' AND o.observed_on >= DATE '{year_start}' "
            f"AND o.observed_on < DATE '{extract_date}' AND o.nhs_number IN ({old})",
        ),
        ref=(5.0, 15.0),
    )
    for name, column, where, ref in (
        ("lives alone, aged 65+", "lives_alone", "age_years >= 65", (10.0, 40.0)),
        ("care home resident, aged 85+", "care_home", "age_years >= 85", (3.0, 20.0)),
        ("home care package, aged 75+", "home_care_package", "age_years >= 75", None),
        ("has a carer, aged 75+", "has_carer", "age_years >= 75", None),
    ):
        add(
            s,
            name,
            _scalar(con, f"SELECT 100.0 * avg({column}) FROM _profile_features WHERE {where}"),
            ref=ref,
        )
    for code in ("FALLS_ASSESSMENT", "MEDICATION_REVIEW", "ADVANCE_CARE_PLAN"):
        value = _scalar(
            con,
            f"SELECT 100.0 * count(DISTINCT o.nhs_number) / (SELECT count(*) FROM ({old})) "
            f"FROM observations o WHERE o.code = '{code}' AND o.observed_on >= "
            f"DATE '{year_start}' AND o.nhs_number IN ({old})",
        )
        add(
            s,
            f"{code.lower().replace('_', ' ')} in the year, aged 65+",
            value,
            ref=(0.01, 100.0),
            reference="> 0",
        )


def _admissions(
    con: duckdb.DuckDBPyConnection, add: Any, index_date: date, year_start: date, extract_date: date
) -> None:
    s = "emergency admissions"
    emergency = "setting = 'inpatient' AND admission_method = 'emergency'"
    em_a = "a.setting = 'inpatient' AND a.admission_method = 'emergency'"
    end = index_date + timedelta(days=90)
    add(
        s,
        f"admitted in the 90 days from {index_date}",
        _scalar(
            con,
            f"SELECT 100.0 * count(DISTINCT a.nhs_number) / (SELECT count(*) FROM "
            f"_profile_features) FROM activity a JOIN _profile_features f USING (nhs_number) "
            f"WHERE {em_a} AND a.start_date >= "
            f"DATE '{index_date}' AND a.start_date < DATE '{end}'",
        ),
        ref=(1.5, 2.5),
    )
    ys, ye = f"DATE '{year_start}'", f"DATE '{extract_date}'"
    age = f"date_sub('year', p.date_of_birth, {ys})"
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE _profile_year AS "
        f"SELECT p.nhs_number, {_age_band_sql(age)} AS band, {age} AS age, "
        f"coalesce(n.admissions, 0) AS admissions FROM ({_pop_sql(ys)}) p "
        f"LEFT JOIN (SELECT a.nhs_number, count(*) AS admissions FROM activity a "
        f"WHERE {em_a} AND a.start_date >= {ys} AND a.start_date < {ye} GROUP BY 1) n "
        f"USING (nhs_number)"
    )
    rates = dict(
        con.execute(
            "SELECT band, 100.0 * avg(CASE WHEN admissions > 0 THEN 1 ELSE 0 END) "
            "FROM _profile_year GROUP BY 1"
        ).fetchall()
    )
    for band in _AGE_BANDS:
        add(
            s,
            f"admitted in the year, aged {band}",
            rates.get(band),
            ref=(25.0, 35.0) if band == "85+" else None,
        )
    add(
        s,
        "admitted in the year, aged under 45",
        _scalar(
            con,
            "SELECT 100.0 * avg(CASE WHEN admissions > 0 THEN 1 ELSE 0 END) FROM _profile_year "
            "WHERE age < 45",
        ),
        ref=(2.0, 4.5),
    )
    ordered = [rates.get(b, 0.0) for b in _AGE_BANDS[1:]]
    add(
        s,
        "annual rate rises from 18-44 to 85+",
        None,
        "",
        reference="rises",
        ok=all(b >= a for a, b in itertools.pairwise(ordered)),
    )
    top = _scalar(
        con,
        "WITH o AS (SELECT admissions, row_number() OVER (ORDER BY admissions DESC) AS r, "
        "count(*) OVER () AS n FROM _profile_year WHERE age >= 65) "
        "SELECT 100.0 * sum(admissions) FILTER (WHERE r <= ceil(0.05 * n)) "
        "/ nullif(sum(admissions), 0) FROM o",
    )
    add(s, "share of 65+ admissions from the top 5% of 65+", top, ref=(50.0, 75.0))
    winter = _scalar(
        con,
        f"WITH m AS (SELECT date_trunc('month', start_date) AS month, count(*) AS n "
        f"FROM activity WHERE {emergency} AND start_date >= (SELECT min(start_date) "
        f"FROM activity) GROUP BY 1) SELECT avg(n) FILTER (WHERE month(month) IN (12, 1, 2)) "
        f"/ avg(n) FILTER (WHERE month(month) IN (6, 7, 8)) FROM m",
    )
    add(
        s,
        "winter (Dec-Feb) / summer (Jun-Aug) monthly admissions",
        winter,
        "x",
        ref=(1.1, 2.0),
        reference=">= 1.1",
    )
    add(
        s,
        "with an A&E attendance the same day",
        _scalar(
            con,
            f"SELECT 100.0 * avg(CASE WHEN EXISTS (SELECT 1 FROM activity e WHERE "
            f"e.nhs_number = a.nhs_number AND e.setting = 'ae' AND e.start_date = a.start_date) "
            f"THEN 1 ELSE 0 END) FROM activity a WHERE {em_a}",
        ),
        ref=(60.0, 100.0),
        reference=">= 60%",
    )
    los = con.execute(
        f"SELECT median(date_diff('day', start_date, end_date)), "
        f"avg(date_diff('day', start_date, end_date)) FROM activity WHERE {emergency} "
        f"AND end_date IS NOT NULL"
    ).fetchall()[0]
    add(
        s,
        "length of stay, median",
        None if los[0] is None else float(los[0]),
        "days",
        ref=(1.0, 7.0),
    )
    add(
        s,
        "length of stay, mean",
        None if los[1] is None else float(los[1]),
        "days",
        ref=(3.0, 12.0),
    )
    # Deaths within 90 days of a first emergency admission in the year (aged 65+), against
    # the deaths expected at the same age: the 90-day death rate of everyone in that age band.
    ratio = _scalar(
        con,
        f"WITH first AS (SELECT a.nhs_number, y.band, min(a.start_date) AS d FROM activity a "
        f"JOIN _profile_year y USING (nhs_number) WHERE y.age >= 65 AND {em_a} "
        f"AND a.start_date >= {ys} AND a.start_date < {ye} - INTERVAL 90 DAY GROUP BY 1, 2), "
        f"base AS (SELECT y.band, avg(CASE WHEN p.date_of_death < {ys} + INTERVAL 90 DAY "
        f"THEN 1.0 ELSE 0 END) AS r FROM _profile_year y JOIN patients p USING (nhs_number) "
        f"WHERE y.age >= 65 GROUP BY 1) "
        f"SELECT sum(CASE WHEN p.date_of_death < f.d + INTERVAL 90 DAY THEN 1.0 ELSE 0 END) "
        f"/ nullif(sum(base.r), 0) FROM first f JOIN patients p USING (nhs_number) "
        f"JOIN base USING (band)",
    )
    add(
        s,
        "90-day mortality after admission vs same age (O/E), 65+",
        ratio,
        "x",
        ref=(2.0, 100.0),
        reference=">= 2",
    )


def _registration(
    con: duckdb.DuckDBPyConnection, add: Any, year_start: date, extract_date: date
) -> None:
    s = "registration and record quality"
    ys = f"DATE '{year_start}'"
    add(
        s,
        "deaths in the year",
        _scalar(
            con,
            f"SELECT 100.0 * count(*) FILTER (WHERE date_of_death >= {ys}) / count(*) "
            f"FROM ({_pop_sql(ys)})",
        ),
        ref=(0.8, 1.2),
    )
    add(
        s,
        "type 1 opt-outs",
        _scalar(con, "SELECT 100.0 * avg(CASE WHEN type1_opt_out THEN 1 ELSE 0 END) FROM patients"),
        ref=(2.0, 4.0),
    )
    start = "(SELECT min(start_date) FROM activity)"
    add(
        s,
        "joined during the history",
        _scalar(
            con,
            f"SELECT 100.0 * avg(CASE WHEN registered_from > {start} THEN 1 ELSE 0 END) "
            f"FROM patients",
        ),
        ref=(0.5, 60.0),
        reference="> 0",
    )
    add(
        s,
        "born during the history",
        _scalar(
            con,
            f"SELECT 100.0 * avg(CASE WHEN date_of_birth > {start} THEN 1 ELSE 0 END) "
            f"FROM patients",
        ),
        ref=(0.5, 10.0),
        reference="> 0",
    )
    add(
        s,
        "left the practice",
        _scalar(
            con,
            "SELECT 100.0 * avg(CASE WHEN registered_to IS NOT NULL THEN 1 ELSE 0 END) "
            "FROM patients",
        ),
        ref=(0.5, 60.0),
        reference="> 0",
    )
    add(
        s,
        "died during the history",
        _scalar(
            con,
            "SELECT 100.0 * avg(CASE WHEN date_of_death IS NOT NULL THEN 1 ELSE 0 END) "
            "FROM patients",
        ),
        ref=(0.5, 20.0),
        reference="> 0",
    )
    add(
        s,
        "duplicate GP contacts (same person and day)",
        _scalar(
            con,
            "SELECT 100.0 * sum(n - 1) / sum(n) FROM (SELECT count(*) AS n FROM activity "
            "WHERE setting = 'gp' GROUP BY nhs_number, start_date)",
        ),
        ref=(0.1, 1.0),
    )
    del extract_date

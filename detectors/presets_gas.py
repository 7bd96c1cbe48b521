"""Occupational exposure limits and flammable-gas alarm set points, as named presets.

Used by :mod:`.gas_exposure` (``preset: H2S``) and :mod:`.lel` (``preset: "10/20"``). Values are
plain data so a site can check them against the tables it is bound by: exposure limits are
revised (ACGIH lowered H2S from 10/15 ppm to 1/5 ppm in 2010) and differ between jurisdictions
(OSHA PELs, EU IOELVs, national lists). An explicit ``twa`` / ``stel`` / ``idlh`` in the detector's
params overrides the preset's value.

Sources (the limit types):

* **TLV-TWA** -- ACGIH Threshold Limit Value, time-weighted average over an 8-hour workday
  (40-hour week) to which nearly all workers may be repeatedly exposed.
* **TLV-STEL** -- ACGIH short-term exposure limit: a 15-minute TWA that should not be exceeded at
  any time during the workday.
* **IDLH** -- NIOSH "Immediately Dangerous to Life or Health" concentration (NIOSH IDLH Values,
  1994 documentation, as listed in the NIOSH Pocket Guide to Chemical Hazards): escape within 30
  minutes without irreversible harm is expected below it. It is an instantaneous ceiling here.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ExposureLimits:
    """Exposure limits of one gas, in ``unit`` (ppm by volume for all built-in presets)."""

    gas: str
    twa: float  # 8-h time-weighted average
    stel: float  # 15-min short-term exposure limit
    idlh: float  # instantaneous
    unit: str
    source: str


#: Toxic gases: name -> limits. Keys are matched case-insensitively.
EXPOSURE_PRESETS: dict[str, ExposureLimits] = {
    # Hydrogen sulfide, CAS 7783-06-4. ACGIH TLV (adopted 2010): TWA 1 ppm, STEL 5 ppm.
    # NIOSH IDLH: 100 ppm (NIOSH Pocket Guide). (OSHA general-industry PEL is a 20 ppm ceiling.)
    "H2S": ExposureLimits("H2S", twa=1.0, stel=5.0, idlh=100.0, unit="ppm",
                          source="ACGIH TLV-TWA/STEL (2010); NIOSH IDLH"),
    # Ammonia, CAS 7664-41-7. ACGIH TLV: TWA 25 ppm, STEL 35 ppm. NIOSH IDLH: 300 ppm.
    "NH3": ExposureLimits("NH3", twa=25.0, stel=35.0, idlh=300.0, unit="ppm",
                          source="ACGIH TLV-TWA/STEL; NIOSH IDLH"),
    # Chlorine, CAS 7782-50-5. ACGIH TLV: TWA 0.5 ppm, STEL 1 ppm. NIOSH IDLH: 10 ppm.
    "Cl2": ExposureLimits("Cl2", twa=0.5, stel=1.0, idlh=10.0, unit="ppm",
                          source="ACGIH TLV-TWA/STEL; NIOSH IDLH"),
}

#: Flammable gases, in %LEL: name -> (first alarm, second alarm). Common fixed-detector set-point
#: pairs (e.g. EN 60079-29-2 guidance and vendor defaults: a warning level, then an action level
#: that trips ventilation / shuts down; 10/20 for enclosed spaces, 20/40 in open process areas).
LEL_PRESETS: dict[str, tuple[float, float]] = {
    "10/20": (10.0, 20.0),
    "10/40": (10.0, 40.0),
    "20/40": (20.0, 40.0),
}

#: Units a ppm limit can be compared with, and the factor that turns a reading into ppm.
PPM_FACTORS: dict[str, float] = {"ppm": 1.0, "ppmv": 1.0, "ppb": 1e-3, "ppbv": 1e-3}


def exposure_preset(name: str) -> ExposureLimits:
    """The preset called ``name`` (case-insensitive); KeyError listing the known ones if none."""
    for k, v in EXPOSURE_PRESETS.items():
        if k.lower() == name.lower():
            return v
    raise KeyError(f"unknown gas exposure preset {name!r}; known: {', '.join(EXPOSURE_PRESETS)}")


def is_lel_unit(unit: str) -> bool:
    """Whether a sensor unit reads in percent of the lower explosive limit ("%LEL", "% LEL")."""
    return unit.replace(" ", "").lower() in ("%lel", "lel%", "%lfl")

"""The scrape-time ``/metrics`` families of ``nbq serve``: the device queue, the decode
memory budget, the served model, and power (measured and modelled)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client.core import Metric

from .metrics import gauge, labelled_counter, labelled_gauge

if TYPE_CHECKING:
    from .service import Service


def live_metrics(service: Service) -> list[Metric]:
    """Scrape-time families: queue, the model, power (measured and modelled)."""
    s = service.current_or_none()
    out = [
        gauge(
            "nbq_queue_waiting",
            "Jobs waiting for the device (not counting the one running).",
            service.worker.waiting,
        ),
        gauge("nbq_queue_limit", "Most jobs allowed to wait.", service.config.max_queue),
        gauge(
            "nbq_decode_budget_bytes",
            "Memory all image decodes at once may be charged (bytes).",
            service.budget.total,
        ),
        gauge(
            "nbq_decode_budget_in_use_bytes",
            "Memory charged to the decodes running now (bytes, from their headers).",
            service.budget.in_use,
        ),
        gauge(
            "nbq_decode_budget_peak_bytes",
            "Most memory charged to decodes at once since start (bytes).",
            service.budget.peak,
        ),
        gauge(
            "nbq_decode_budget_waiting",
            "Requests waiting for room in the decode budget.",
            service.budget.waiting,
        ),
    ]
    if s is not None:
        out.append(
            gauge(
                "nbq_model_info",
                "The model being served (value 1).",
                1,
                name=s.bundle_id,
                datapath=s.datapath,
                backend=s.model.backend_name,
                sha256=s.model.bundle.sha256,
            )
        )
        if s.modelled.get("available"):
            out.append(
                gauge(
                    "nbq_modelled_power_watts",
                    "MODELLED (not measured) average power per image of the served model (W).",
                    float(s.modelled["power_w"]),
                )
            )
    power = service.power
    latest = power.latest() if power is not None else {}
    on = bool(latest.get("available"))
    out.append(gauge("nbq_power_available", "1 when board rail power is measured, 0 when not.", on))
    watts = {k[:-2]: v for k, v in latest.items() if k.endswith("_w") and isinstance(v, float)}
    out.append(
        labelled_gauge(
            "nbq_power_watts", "Latest measured power per rail group (W).", "group", watts
        )
    )
    if on and power is not None:  # a reading is available only from a sampler
        out.append(
            gauge(
                "nbq_power_sample_age_seconds",
                "Age of the latest power reading (s).",
                latest["age_s"],
            )
        )
        out.append(
            labelled_counter(
                "nbq_energy_joules",
                "Measured board energy per rail group since start (J; trapezoid over samples).",
                "group",
                power.energy_totals_j(),
            )
        )
    return out

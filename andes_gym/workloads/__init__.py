"""Seeded workloads: arrivals, lengths and QoE targets of LLM requests, and trace I/O.

Typical use::

    from andes_gym.workloads import load_workload_config, make_workload
    workload = make_workload(load_workload_config("bursty_2x"), seed=0)
"""

from andes_gym.workloads.config import (
    ArrivalConfig,
    LengthConfig,
    StreamsConfig,
    TargetConfig,
    WorkloadConfig,
    list_presets,
    load_workload_config,
    workload_config_from_dict,
    workload_config_to_dict,
)
from andes_gym.workloads.generate import make_workload
from andes_gym.workloads.spec import RequestSpec, Workload
from andes_gym.workloads.traces import (
    TraceData,
    TraceError,
    read_azure_trace,
    read_burstgpt_trace,
    read_project_trace,
    read_trace,
    read_trace_workload,
    trace_to_workload,
    write_trace_csv,
)

__all__ = [
    "ArrivalConfig",
    "LengthConfig",
    "RequestSpec",
    "StreamsConfig",
    "TargetConfig",
    "TraceData",
    "TraceError",
    "Workload",
    "WorkloadConfig",
    "list_presets",
    "load_workload_config",
    "make_workload",
    "read_azure_trace",
    "read_burstgpt_trace",
    "read_project_trace",
    "read_trace",
    "read_trace_workload",
    "trace_to_workload",
    "workload_config_from_dict",
    "workload_config_to_dict",
    "write_trace_csv",
]

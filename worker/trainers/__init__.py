"""Trainers: the workloads a plant can run, their shared contract and the registry by name."""

from worker.trainers.base import DataError, SiteData, Trainer, TrainParams, TrainResult
from worker.trainers.registry import available_trainers, get_trainer, register_trainer

__all__ = [
    "DataError",
    "SiteData",
    "TrainParams",
    "TrainResult",
    "Trainer",
    "available_trainers",
    "get_trainer",
    "register_trainer",
]

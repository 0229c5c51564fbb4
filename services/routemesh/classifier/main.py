"""Entry points the routemesh CLI uses to run the classifier service."""

from __future__ import annotations

import argparse

import grpc

from routemesh.classifier.metrics import ClassifierMetrics
from routemesh.classifier.servicer import ClassifierServicer
from routemesh.common.metrics import new_registry
from routemesh.common.policy import PolicyVersion
from routemesh.common.policy_watch import PolicyHolder, PolicyWatcher
from routemesh.common.serve import Service
from routemesh.quality.serving import PolicyQuality, policy_quality
from routemesh.v1 import classifier_pb2, classifier_pb2_grpc

GRPC_SERVICE_NAME = classifier_pb2.DESCRIPTOR.services_by_name["ClassifierService"].full_name


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The classifier needs no flags beyond the CLI's common ones (--control: where the policy comes from)."""


def _quality(version: PolicyVersion) -> PolicyQuality | None:
    # A policy whose artifact is missing, corrupt or of another digest raises PolicyError: the holder keeps
    # the last good policy (and its predictor) and logs why.
    return policy_quality(version.policy)


async def build(args: argparse.Namespace) -> Service:
    """The classifier service, ready for routemesh.common.serve.serve(): serving once it holds a policy."""
    holder: PolicyHolder[PolicyQuality | None] = PolicyHolder(compile=_quality)
    watcher = PolicyWatcher(holder, args.control, "classifier")
    registry = new_registry() if getattr(args, "metrics_listen", "") else None
    metrics = ClassifierMetrics(registry, lambda: holder.current_version.version if holder.current_version else 0) \
        if registry is not None else None
    servicer = ClassifierServicer(quality=lambda: holder.current, classified=metrics.classified if metrics else None)

    def register(server: grpc.aio.Server) -> None:
        classifier_pb2_grpc.add_ClassifierServiceServicer_to_server(servicer, server)

    async def on_start() -> None:
        watcher.start()

    return Service(name="classifier", register=register, grpc_services=[GRPC_SERVICE_NAME],
                   on_start=on_start, on_stop=watcher.stop, on_drain=servicer.stop,
                   ready=lambda: holder.current_version is not None, metrics=registry)

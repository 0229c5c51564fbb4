"""Entry points the routemesh CLI uses to run the classifier service."""

from __future__ import annotations

import argparse

import grpc

from routemesh.classifier.servicer import ClassifierServicer
from routemesh.common.serve import Service
from routemesh.v1 import classifier_pb2, classifier_pb2_grpc

GRPC_SERVICE_NAME = classifier_pb2.DESCRIPTOR.services_by_name["ClassifierService"].full_name


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The classifier is stateless and needs no flags beyond the CLI's common ones."""


def _register(server: grpc.aio.Server) -> None:
    classifier_pb2_grpc.add_ClassifierServiceServicer_to_server(ClassifierServicer(), server)


async def build(args: argparse.Namespace) -> Service:
    """The classifier service, ready for routemesh.common.serve.serve()."""
    return Service(name="classifier", register=_register, grpc_services=[GRPC_SERVICE_NAME])

"""Shared helpers of the UR tests: a fake UR controller subprocess on a free loopback address."""
from __future__ import annotations

from acquisition.ur.fake_controller import free_loopback_host, start_fake

__all__ = ["free_loopback_host", "start_fake"]

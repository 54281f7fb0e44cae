"""A fake UR5 controller for tests and demos without a robot.

Run it with ``python -m acquisition.ur.fake_controller [--host 127.0.0.1] [--controller-version 3.15.7]``
or from Python with :class:`FakeControllerProcess` (a separate process: ur_rtde's blocking constructors
hold the GIL). It speaks RTDE protocol v2 on 30004, the dashboard protocol on 29999, accepts scripts
on 30003 and executes ur_rtde's control-script register handshake on UR5 kinematics with timed motion.
Faults are injected through a JSON-lines control channel (see :meth:`FakeControllerProcess.command`).
Written from the public RTDE protocol description.
"""
from acquisition.ur.fake_controller.launcher import (
    FakeControllerError,
    FakeControllerProcess,
    free_loopback_host,
    start_fake,
    wait_for_port,
)

__all__ = ["FakeControllerProcess", "FakeControllerError", "free_loopback_host", "start_fake", "wait_for_port"]

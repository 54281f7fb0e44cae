"""The simulated cell: a sim clock, UR5 kinematics and a simulated robot (plus the scene and camera).

Import from the modules (``acquisition.sim.robot`` ...); this package file stays free of imports so
that importing one part of the simulation never loads the others.
"""

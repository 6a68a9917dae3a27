"""``dbtier lab``: a lab of separate hosts on one Linux machine, for trying the remote providers and drills.

Each host has its own network namespace (one address from 198.18.0.0/15 on the lab's bridge, no route
leaving the machine), its own root file system (an overlay of this machine's root) and systemd as PID 1
booting an sshd on port 22. The lab is a test tool: root only.
"""

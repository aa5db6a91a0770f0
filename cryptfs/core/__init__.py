"""The format-neutral core that cryptfs, sam and agent share.

The FUSE adapter and mount life cycle, the chunked-file layer (the only user of the C
extension), command-line plumbing, hardening, progress, name display and base errors. Nothing
here knows the gocryptfs or the Sam on-disk format: those packages describe their layout and
hand the core a :class:`~cryptfs.core.source.MountSource`.
"""

"""Value types shared by every stage: envelopes, replies, queue IDs, states. No I/O."""

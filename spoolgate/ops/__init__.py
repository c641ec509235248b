"""Operations: structured logging and the Prometheus metrics every stage counts into."""

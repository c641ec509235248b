"""Operations: logging now; metrics and health later."""

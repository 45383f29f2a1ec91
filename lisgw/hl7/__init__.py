"""HL7 v2: MLLP framer (sans-IO), fast segment parser/builder, hl7apy wrapper."""

"""The HIS side of the gateway, pure: profiles, inbound orders, outbound results, ACKs.

Layer: domain/protocol (pure: no twisted, sqlalchemy, clock or logging).

* ``lisgw.his.types`` — HisOrder, OrderedTest, RoutedResult (shared with routing and store);
* ``lisgw.his.profile`` — HisProfile: where a hospital's HIS puts things (config/his/*.yaml);
* ``lisgw.his.orders`` — ORM^O01 / OML^O21 → HisOrder;
* ``lisgw.his.results`` — RoutedResult → ORU^R01, MSH-10 from content identities;
* ``lisgw.his.ack`` — the HIS's ACK → AckOutcome.

The Twisted services (MLLP listener, outbox dispatcher) live in lisgw.services.
"""

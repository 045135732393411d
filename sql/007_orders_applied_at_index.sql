-- The read model's change feed (order.OrderQuery/ListChanges, behind
-- orderapi's GET /api/orders/changes) reads rows by when they were written.
CREATE INDEX IF NOT EXISTS orders_applied_at ON orders (applied_at);

-- orderquery's read model. Only orderquery writes these tables.
CREATE TABLE IF NOT EXISTS orders (
    order_id      TEXT             NOT NULL PRIMARY KEY,
    customer_id   TEXT             NOT NULL,
    restaurant_id TEXT             NOT NULL,
    status        TEXT             NOT NULL,
    amount_cents  BIGINT           NOT NULL,
    version       BIGINT           NOT NULL,   -- the last order event applied
    created_at    BIGINT           NOT NULL,   -- unix microseconds (of order-created)
    updated_at    BIGINT           NOT NULL    -- unix microseconds (of the last event applied)
);

CREATE INDEX IF NOT EXISTS orders_customer ON orders (customer_id, order_id);
CREATE INDEX IF NOT EXISTS orders_status ON orders (status, order_id);

CREATE TABLE IF NOT EXISTS order_items (
    order_id   TEXT             NOT NULL,
    line       INT              NOT NULL,
    code       TEXT             NOT NULL,
    name       TEXT             NOT NULL,
    unit_price_cents BIGINT        NOT NULL,
    quantity   INT              NOT NULL,
    PRIMARY KEY (order_id, line)
);

-- Tables of the joins pipeline (spark_jobs/jobs/joins.py, docs/pipelines/joins.md).
--
-- * products: the catalogue the category enrichment joins orders with. The job re-reads it on an
--   interval, so a row inserted or changed here reaches new orders without a restart. Seeded with
--   the generator's catalogue (streamops/generator/records.py CATALOGUE); the category follows
--   the SKU's first digit there (1 electronics, 2 coffee, 3 office, 4 sports).
-- * category_revenue_1m: revenue per 1-minute event-time window, product category and currency.
-- * joins_applied_batches: which micro-batches of which query already added their share to
--   category_revenue_1m; written in the same transaction as the sums, so a replayed batch adds
--   nothing (see spark_jobs/sinks/joins.py).
-- * order_payments becomes able to hold an order that was not paid in time: status 'unpaid' and
--   NULL payment columns. A contract change (shared/CONTRACT.md), made on purpose: the left outer
--   join of the contract's issue writes such orders. ck_order_payments_payment keeps the two
--   shapes apart, so a row is either fully paid or fully unpaid.
--
-- Every statement is re-runnable: a half-applied file can be applied again.

CREATE TABLE IF NOT EXISTS products (
    product_id VARCHAR(128)  NOT NULL COMMENT 'as orders.product_id',
    name       VARCHAR(255)  NOT NULL,
    category   VARCHAR(64)   NOT NULL,
    list_price DECIMAL(12,2) NULL COMMENT 'catalogue price; orders carry their own unit_price',
    created_at DATETIME(3)   NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    updated_at DATETIME(3)   NOT NULL DEFAULT CURRENT_TIMESTAMP(3)
                             ON UPDATE CURRENT_TIMESTAMP(3),
    PRIMARY KEY (product_id),
    KEY ix_products_category (category)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin
  COMMENT='product catalogue for the enrichment of orders (joins pipeline)';

INSERT IGNORE INTO products (product_id, name, category, list_price) VALUES
    ('SKU-10001', 'USB-C charging cable, 1 m', 'electronics', 9.99),
    ('SKU-10002', 'Wireless mouse', 'electronics', 24.90),
    ('SKU-10003', 'Mechanical keyboard', 'electronics', 89.00),
    ('SKU-10004', '27" 4K monitor', 'electronics', 329.99),
    ('SKU-10005', 'Noise-cancelling headphones', 'electronics', 199.00),
    ('SKU-10006', 'Laptop stand, aluminium', 'electronics', 39.95),
    ('SKU-10007', 'HDMI 2.1 cable, 2 m', 'electronics', 14.49),
    ('SKU-10008', 'Webcam 1080p', 'electronics', 59.99),
    ('SKU-10009', 'USB hub, 7 ports', 'electronics', 29.99),
    ('SKU-10010', 'Portable SSD 1 TB', 'electronics', 119.00),
    ('SKU-20001', 'Espresso beans, 1 kg', 'coffee', 18.50),
    ('SKU-20002', 'Ceramic mug', 'coffee', 7.95),
    ('SKU-20003', 'French press, 1 l', 'coffee', 27.00),
    ('SKU-20004', 'Burr grinder', 'coffee', 149.00),
    ('SKU-30001', 'Notebook A5, dotted', 'office', 4.99),
    ('SKU-30002', 'Gel pens, pack of 10', 'office', 6.49),
    ('SKU-30003', 'Desk lamp, LED', 'office', 34.90),
    ('SKU-30004', 'Office chair', 'office', 249.00),
    ('SKU-40001', 'Running socks, 3 pairs', 'sports', 12.99),
    ('SKU-40002', 'Water bottle, 750 ml', 'sports', 19.90);

-- category is 'unknown' for orders of a product the catalogue did not hold when they were
-- processed; they are not moved when the product is added later.
CREATE TABLE IF NOT EXISTS category_revenue_1m (
    window_start DATETIME(3)   NOT NULL COMMENT 'inclusive, UTC, on a whole minute',
    category     VARCHAR(64)   NOT NULL,
    currency     CHAR(3)       NOT NULL,
    window_end   DATETIME(3)   NOT NULL COMMENT 'exclusive, UTC',
    order_count  BIGINT        NOT NULL,
    item_count   BIGINT        NOT NULL,
    revenue      DECIMAL(18,2) NOT NULL,
    updated_at   DATETIME(3)   NOT NULL DEFAULT CURRENT_TIMESTAMP(3)
                               ON UPDATE CURRENT_TIMESTAMP(3),
    PRIMARY KEY (window_start, category, currency),
    KEY ix_category_revenue_1m_updated_at (updated_at),
    CONSTRAINT ck_category_revenue_1m_window CHECK (window_end > window_start),
    CONSTRAINT ck_category_revenue_1m_counts CHECK (order_count >= 0 AND item_count >= 0)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin
  COMMENT='revenue per 1-minute event-time window, product category and currency';

-- query_id is the streaming query's id, kept in its checkpoint: a fresh checkpoint starts a new
-- query id, whose batch ids count from 0 again.
CREATE TABLE IF NOT EXISTS joins_applied_batches (
    sink       VARCHAR(64) NOT NULL,
    query_id   CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    batch_id   BIGINT      NOT NULL,
    row_count  INT         NOT NULL COMMENT 'rows the batch added to',
    applied_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    PRIMARY KEY (sink, query_id, batch_id),
    KEY ix_joins_applied_batches_applied_at (applied_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin
  COMMENT='micro-batches whose increments are in category_revenue_1m';

ALTER TABLE order_payments
    MODIFY payment_id      VARCHAR(64)   NULL COMMENT 'NULL when unpaid',
    MODIFY paid_amount     DECIMAL(14,2) NULL COMMENT 'NULL when unpaid',
    MODIFY payment_time    DATETIME(3)   NULL COMMENT 'NULL when unpaid',
    MODIFY seconds_to_pay  DECIMAL(12,3) NULL COMMENT 'NULL when unpaid',
    MODIFY amount_mismatch BOOLEAN       NULL
        COMMENT 'paid_amount differs from order_amount; NULL when unpaid',
    ADD KEY IF NOT EXISTS ix_order_payments_order_time (order_time),
    DROP CONSTRAINT IF EXISTS ck_order_payments_status,
    DROP CONSTRAINT IF EXISTS ck_order_payments_payment,
    ADD CONSTRAINT ck_order_payments_status
        CHECK (status IN ('authorized', 'captured', 'failed', 'unpaid')),
    ADD CONSTRAINT ck_order_payments_payment CHECK (
        (status = 'unpaid' AND payment_id IS NULL AND paid_amount IS NULL
            AND payment_time IS NULL AND seconds_to_pay IS NULL AND amount_mismatch IS NULL)
        OR (status <> 'unpaid' AND payment_id IS NOT NULL AND paid_amount IS NOT NULL
            AND payment_time IS NOT NULL AND seconds_to_pay IS NOT NULL
            AND amount_mismatch IS NOT NULL)
    ),
    COMMENT = 'each order joined with its payment, or unpaid when none came in time';

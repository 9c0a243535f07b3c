/**
 * What a batch's fresh events do to reservations and transfers — a `shipped` naming a reservation consumes it, a
 * `received` naming a transfer counts toward it — is decided inside the batch's one statement, by
 * stockwire_apply_batch (processors/db/migrations/005), under the batch's row locks and by the rules of
 * processors/ledger/reservations.ts (consume, receiveCheck, transferState). Events are facts: none is refused there;
 * a link that does not fit changes nothing and raises one of these.
 */

/** An alert to publish after the commit: `alerts/{wh}/{kind}`. */
export interface Notice {
  wh: string;
  kind: string;
  sku: string;
  message: string;
}

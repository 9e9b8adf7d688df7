import { expect, test } from "bun:test";
import { LOCAL_RESOURCES } from "../system/lack";
import { failureOf, localResourceSlot, readTcpRow, SOURCE_RATE_AT, TCP_ROW } from "./stats";

test("the row's local-resource slots: one per resource after the others, read back by name (what local_resource_resets_total shows)", () => {
  expect(localResourceSlot("buffers")).toBe(SOURCE_RATE_AT + 1);
  expect(new Set(LOCAL_RESOURCES.map(localResourceSlot)).size).toBe(LOCAL_RESOURCES.length);
  expect(Math.max(...LOCAL_RESOURCES.map(localResourceSlot))).toBe(TCP_ROW - 1);
  const row = new Float64Array(TCP_ROW);
  expect(readTcpRow(row).localResourceResets).toEqual({});
  row[localResourceSlot("buffers")] = 2;
  row[localResourceSlot("epoll")] = 1;
  expect(readTcpRow(row).localResourceResets).toEqual({ buffers: 2, epoll: 1 });
});

test("failureOf: a connect's errno as the class the Bun path's errorClass gives its code", () => {
  expect([111, 110, 104, 32, 113, 101, 99, 24, 0].map(failureOf)).toEqual(["refused", "timeout", "reset", "reset", "unreachable", "unreachable", "other", "other", "other"]);
});

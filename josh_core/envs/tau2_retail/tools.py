"""The τ²-bench retail tools (our own code, after the benchmark's semantics).

Tables: `products` (product_id -> {name, product_id, variants: {item_id -> {item_id, options,
available, price}}}), `users` (user_id -> {name, address, email, payment_methods, orders}),
`orders` (order_id -> {order_id, user_id, address, items, status, fulfillments,
payment_history, ...}). Gift cards carry a `balance`.

One deliberate difference from tau2-bench's code: `modify_pending_order_items` gives each
modified item the price and options of its own new variant (the benchmark's loop gives every
modified item those of the last new variant in the list). Rewards compare states made by
these same tools on both sides, so this changes no task's outcome for an agent that follows
the gold actions.
"""

from __future__ import annotations

import json
from typing import Any

from josh_core.envs.tau2.state import Transaction
from josh_core.envs.tau2.tools import Calculate, Tool, ToolError, TransferToHumanAgents, array, string

ORDER_ID = "The order id, such as '#W0000000'. Be careful there is a '#' symbol at the beginning of the order id."
USER_ID = "The user id, such as 'sara_doe_496'."
PAYMENT_ID = ("The payment method id to pay or receive refund for the item price difference, such as "
              "'gift_card_0000000' or 'credit_card_0000000'. These can be looked up from the user or order details.")
ITEM_IDS = "The item ids, each such as '1008292230'. There could be duplicate items in the list."


def _order(db: Transaction, order_id: str, edit: bool = False) -> dict[str, Any]:
    if db.get("orders", order_id) is None:
        raise ToolError("Order not found")
    return db.edit("orders", order_id) if edit else db.get("orders", order_id)


def _user(db: Transaction, user_id: str, edit: bool = False) -> dict[str, Any]:
    if db.get("users", user_id) is None:
        raise ToolError("User not found")
    return db.edit("users", user_id) if edit else db.get("users", user_id)


def _product(db: Transaction, product_id: str) -> dict[str, Any]:
    product = db.get("products", product_id)
    if product is None:
        raise ToolError("Product not found")
    return product


def _variant(db: Transaction, product_id: str, item_id: str) -> dict[str, Any]:
    product = _product(db, product_id)
    if item_id not in product["variants"]:
        raise ToolError("Variant not found")
    return product["variants"][item_id]


def _payment_method(db: Transaction, user_id: str, payment_method_id: str) -> dict[str, Any]:
    user = _user(db, user_id)
    if payment_method_id not in user["payment_methods"]:
        raise ToolError("Payment method not found")
    return user["payment_methods"][payment_method_id]


def _is_gift_card(method: dict[str, Any]) -> bool:
    return method.get("source") == "gift_card"


def _add_to_gift_card(db: Transaction, user_id: str, payment_method_id: str, amount: float) -> None:
    """Change a gift card's balance by `amount` (the user record is edited)."""
    user = _user(db, user_id, edit=True)
    card = user["payment_methods"][payment_method_id]
    card["balance"] = round(card["balance"] + amount, 2)


def _count_check(order: dict[str, Any], item_ids: list[str], message: str) -> None:
    present = [item["item_id"] for item in order["items"]]
    for item_id in item_ids:
        if item_ids.count(item_id) > present.count(item_id):
            raise ToolError(message.format(item_id=item_id))


def _address(address1: str, address2: str, city: str, state: str, country: str, zip: str) -> dict[str, str]:
    return {"address1": address1, "address2": address2, "city": city, "country": country, "state": state, "zip": zip}


_ADDRESS_PARAMETERS = {
    "address1": string("The first line of the address, such as '123 Main St'."),
    "address2": string("The second line of the address, such as 'Apt 1' or ''."),
    "city": string("The city, such as 'San Francisco'."),
    "state": string("The state, such as 'CA'."),
    "country": string("The country, such as 'USA'."),
    "zip": string("The zip code, such as '12345'."),
}


class CancelPendingOrder(Tool):
    name = "cancel_pending_order"
    writes = True
    description = ("Cancel a pending order. If the order is already processed or delivered, it cannot be cancelled. "
                   "The agent needs to explain the cancellation detail and ask for explicit user confirmation (yes/no) "
                   "to proceed. The order status becomes 'cancelled' and the payment is refunded: to a gift card at "
                   "once, otherwise in 5-7 business days. Returns the order after the cancellation.")
    parameters = {
        "order_id": string(ORDER_ID),
        "reason": string("The reason for cancellation, either 'no longer needed' or 'ordered by mistake'.",
                         ["no longer needed", "ordered by mistake"]),
    }

    def invoke(self, db: Transaction, order_id: str, reason: str) -> Any:
        order = _order(db, order_id)
        if order["status"] != "pending":
            raise ToolError("Non-pending order cannot be cancelled")
        order = _order(db, order_id, edit=True)
        refunds = []
        for payment in order["payment_history"]:
            method = _payment_method(db, order["user_id"], payment["payment_method_id"])
            refunds.append({"transaction_type": "refund", "amount": payment["amount"],
                            "payment_method_id": payment["payment_method_id"]})
            if _is_gift_card(method):
                _add_to_gift_card(db, order["user_id"], payment["payment_method_id"], payment["amount"])
        order["status"] = "cancelled"
        order["cancel_reason"] = reason
        order["payment_history"].extend(refunds)
        return order


class ExchangeDeliveredOrderItems(Tool):
    name = "exchange_delivered_order_items"
    writes = True
    description = ("Exchange items in a delivered order to new items of the same product type. For a delivered "
                   "order, return or exchange can be only done once by the agent. The agent needs to explain the "
                   "exchange detail and ask for explicit user confirmation (yes/no) to proceed.")
    parameters = {
        "order_id": string(ORDER_ID),
        "item_ids": array("The item ids to be exchanged. " + ITEM_IDS, string("An item id.")),
        "new_item_ids": array("The item ids to be exchanged for, each matching the item id in the same position "
                              "and of the same product. There could be duplicate items in the list.",
                              string("An item id.")),
        "payment_method_id": string(PAYMENT_ID),
    }

    def invoke(self, db: Transaction, order_id: str, item_ids: list[str], new_item_ids: list[str],
               payment_method_id: str) -> Any:
        order = _order(db, order_id)
        if order["status"] != "delivered":
            raise ToolError("Non-delivered order cannot be exchanged")
        _count_check(order, item_ids, "Number of {item_id} not found.")
        if len(item_ids) != len(new_item_ids):
            raise ToolError("The number of items to be exchanged should match.")
        difference = 0.0
        for item_id, new_item_id in zip(item_ids, new_item_ids):
            item = next((i for i in order["items"] if i["item_id"] == item_id), None)
            if item is None:
                raise ToolError(f"Item {item_id} not found")
            variant = _variant(db, item["product_id"], new_item_id)
            if not variant["available"]:
                raise ToolError(f"New item {new_item_id} not found or available")
            difference += variant["price"] - item["price"]
        difference = round(difference, 2)
        method = _payment_method(db, order["user_id"], payment_method_id)
        if _is_gift_card(method) and method["balance"] < difference:
            raise ToolError("Insufficient gift card balance to pay for the price difference")
        order = _order(db, order_id, edit=True)
        order["status"] = "exchange requested"
        order["exchange_items"] = sorted(item_ids)
        order["exchange_new_items"] = sorted(new_item_ids)
        order["exchange_payment_method_id"] = payment_method_id
        order["exchange_price_difference"] = difference
        return order


class FindUserIdByNameZip(Tool):
    name = "find_user_id_by_name_zip"
    description = ("Find user id by first name, last name, and zip code. By default, find user id by email, and only "
                   "call this function if the user is not found by email or cannot remember email.")
    parameters = {
        "first_name": string("The first name of the customer, such as 'John'."),
        "last_name": string("The last name of the customer, such as 'Doe'."),
        "zip": string("The zip code of the customer, such as '12345'."),
    }

    def invoke(self, db: Transaction, first_name: str, last_name: str, zip: str) -> Any:
        for user_id in db.keys("users"):
            user = db.get("users", user_id)
            if (user["name"]["first_name"].lower() == first_name.lower()
                    and user["name"]["last_name"].lower() == last_name.lower()
                    and user["address"]["zip"] == zip):
                return user_id
        raise ToolError("User not found")


class FindUserIdByEmail(Tool):
    name = "find_user_id_by_email"
    description = "Find user id by email."
    parameters = {"email": string("The email of the user, such as 'something@example.com'.")}

    def invoke(self, db: Transaction, email: str) -> Any:
        for user_id in db.keys("users"):
            if db.get("users", user_id)["email"].lower() == email.lower():
                return user_id
        raise ToolError("User not found")


class GetOrderDetails(Tool):
    name = "get_order_details"
    description = "Get the status and details of an order."
    parameters = {"order_id": string(ORDER_ID)}

    def invoke(self, db: Transaction, order_id: str) -> Any:
        return _order(db, order_id)


class GetProductDetails(Tool):
    name = "get_product_details"
    description = "Get the inventory details of a product (all its items, with their options, availability and price)."
    parameters = {"product_id": string("The product id, such as '6086499569'. Be careful the product id is different "
                                       "from the item id.")}

    def invoke(self, db: Transaction, product_id: str) -> Any:
        return _product(db, product_id)


class GetItemDetails(Tool):
    name = "get_item_details"
    description = "Get the inventory details of an item."
    parameters = {"item_id": string("The item id, such as '6086499569'. Be careful the item id is different from the "
                                    "product id.")}

    def invoke(self, db: Transaction, item_id: str) -> Any:
        for product_id in db.keys("products"):
            variants = db.get("products", product_id)["variants"]
            if item_id in variants:
                return variants[item_id]
        raise ToolError("Item not found")


class GetUserDetails(Tool):
    name = "get_user_details"
    description = "Get the details of a user, including their orders."
    parameters = {"user_id": string(USER_ID)}

    def invoke(self, db: Transaction, user_id: str) -> Any:
        return _user(db, user_id)


class ListAllProductTypes(Tool):
    name = "list_all_product_types"
    description = ("List the name and product id of all product types. Each product type has a variety of different "
                   "items with unique item ids and options. There are only 50 product types in the store.")
    parameters = {}

    def invoke(self, db: Transaction) -> Any:
        products = {db.get("products", pid)["name"]: pid for pid in db.keys("products")}
        return json.dumps(products, sort_keys=True)


class ModifyPendingOrderAddress(Tool):
    name = "modify_pending_order_address"
    writes = True
    description = ("Modify the shipping address of a pending order. The agent needs to explain the modification "
                   "detail and ask for explicit user confirmation (yes/no) to proceed.")
    parameters = {"order_id": string(ORDER_ID), **_ADDRESS_PARAMETERS}

    def invoke(self, db: Transaction, order_id: str, address1: str, address2: str, city: str, state: str,
               country: str, zip: str) -> Any:
        if "pending" not in _order(db, order_id)["status"]:
            raise ToolError("Non-pending order cannot be modified")
        order = _order(db, order_id, edit=True)
        order["address"] = _address(address1, address2, city, state, country, zip)
        return order


class ModifyPendingOrderItems(Tool):
    name = "modify_pending_order_items"
    writes = True
    description = ("Modify items in a pending order to new items of the same product type. For a pending order, this "
                   "function can only be called once. The agent needs to explain the exchange detail and ask for "
                   "explicit user confirmation (yes/no) to proceed.")
    parameters = {
        "order_id": string(ORDER_ID),
        "item_ids": array("The item ids to be modified. " + ITEM_IDS, string("An item id.")),
        "new_item_ids": array("The item ids to be modified for, each matching the item id in the same position and "
                              "of the same product. There could be duplicate items in the list.",
                              string("An item id.")),
        "payment_method_id": string(PAYMENT_ID),
    }

    def invoke(self, db: Transaction, order_id: str, item_ids: list[str], new_item_ids: list[str],
               payment_method_id: str) -> Any:
        order = _order(db, order_id)
        if order["status"] != "pending":
            raise ToolError("Non-pending order cannot be modified")
        _count_check(order, item_ids, "{item_id} not found")
        if len(item_ids) != len(new_item_ids):
            raise ToolError("The number of items to be exchanged should match")
        difference = 0.0
        variants = []
        for item_id, new_item_id in zip(item_ids, new_item_ids):
            if item_id == new_item_id:
                raise ToolError("The new item id should be different from the old item id")
            item = next((i for i in order["items"] if i["item_id"] == item_id), None)
            if item is None:
                raise ToolError(f"Item {item_id} not found")
            variant = _variant(db, item["product_id"], new_item_id)
            if not variant["available"]:
                raise ToolError(f"New item {new_item_id} not found or available")
            difference += variant["price"] - item["price"]
            variants.append(variant)
        method = _payment_method(db, order["user_id"], payment_method_id)
        if _is_gift_card(method) and method["balance"] < difference:
            raise ToolError("Insufficient gift card balance to pay for the new item")
        order = _order(db, order_id, edit=True)
        order["payment_history"].append({
            "transaction_type": "payment" if difference > 0 else "refund",
            "amount": abs(difference),
            "payment_method_id": payment_method_id,
        })
        if _is_gift_card(method):
            _add_to_gift_card(db, order["user_id"], payment_method_id, -difference)
        for item_id, new_item_id, variant in zip(item_ids, new_item_ids, variants):
            # The first item with the old id that was not changed yet (duplicates change one by one).
            item = next(i for i in order["items"] if i["item_id"] == item_id)
            item["item_id"] = new_item_id
            item["price"] = variant["price"]
            item["options"] = dict(variant["options"])
        order["status"] = "pending (item modified)"
        return order


class ModifyPendingOrderPayment(Tool):
    name = "modify_pending_order_payment"
    writes = True
    description = ("Modify the payment method of a pending order. The agent needs to explain the modification detail "
                   "and ask for explicit user confirmation (yes/no) to proceed.")
    parameters = {"order_id": string(ORDER_ID), "payment_method_id": string(PAYMENT_ID)}

    def invoke(self, db: Transaction, order_id: str, payment_method_id: str) -> Any:
        order = _order(db, order_id)
        if "pending" not in order["status"]:
            raise ToolError("Non-pending order cannot be modified")
        method = _payment_method(db, order["user_id"], payment_method_id)
        history = order["payment_history"]
        if len(history) != 1 or history[0]["transaction_type"] != "payment":
            raise ToolError("There should be exactly one payment for a pending order")
        old_id = history[0]["payment_method_id"]
        if old_id == payment_method_id:
            raise ToolError("The new payment method should be different from the current one")
        amount = history[0]["amount"]
        if _is_gift_card(method) and method["balance"] < amount:
            raise ToolError("Insufficient gift card balance to pay for the order")
        old_method = _payment_method(db, order["user_id"], old_id)
        order = _order(db, order_id, edit=True)
        order["payment_history"].extend([
            {"transaction_type": "payment", "amount": amount, "payment_method_id": payment_method_id},
            {"transaction_type": "refund", "amount": amount, "payment_method_id": old_id},
        ])
        if _is_gift_card(method):
            _add_to_gift_card(db, order["user_id"], payment_method_id, -amount)
        if _is_gift_card(old_method):
            _add_to_gift_card(db, order["user_id"], old_id, amount)
        return order


class ModifyUserAddress(Tool):
    name = "modify_user_address"
    writes = True
    description = ("Modify the default address of a user. The agent needs to explain the modification detail and ask "
                   "for explicit user confirmation (yes/no) to proceed.")
    parameters = {"user_id": string(USER_ID), **_ADDRESS_PARAMETERS}

    def invoke(self, db: Transaction, user_id: str, address1: str, address2: str, city: str, state: str,
               country: str, zip: str) -> Any:
        user = _user(db, user_id, edit=True)
        user["address"] = _address(address1, address2, city, state, country, zip)
        return user


class ReturnDeliveredOrderItems(Tool):
    name = "return_delivered_order_items"
    writes = True
    description = ("Return some items of a delivered order. The order status will be changed to 'return requested'. "
                   "The agent needs to explain the return detail and ask for explicit user confirmation (yes/no) to "
                   "proceed. The user will receive follow-up email for how and where to return the item.")
    parameters = {
        "order_id": string(ORDER_ID),
        "item_ids": array("The item ids to be returned. " + ITEM_IDS, string("An item id.")),
        "payment_method_id": string("The payment method id to receive the refund, such as 'gift_card_0000000' or "
                                    "'credit_card_0000000': the original payment method or a gift card."),
    }

    def invoke(self, db: Transaction, order_id: str, item_ids: list[str], payment_method_id: str) -> Any:
        order = _order(db, order_id)
        if order["status"] != "delivered":
            raise ToolError("Non-delivered order cannot be returned")
        method = _payment_method(db, order["user_id"], payment_method_id)
        if not _is_gift_card(method) and payment_method_id != order["payment_history"][0]["payment_method_id"]:
            raise ToolError("Payment method should be the original payment method")
        _count_check(order, item_ids, "Some item not found")
        order = _order(db, order_id, edit=True)
        order["status"] = "return requested"
        order["return_items"] = sorted(item_ids)
        order["return_payment_method_id"] = payment_method_id
        return order


TOOLS: list[Tool] = [
    Calculate(), CancelPendingOrder(), ExchangeDeliveredOrderItems(), FindUserIdByNameZip(), FindUserIdByEmail(),
    GetOrderDetails(), GetProductDetails(), GetItemDetails(), GetUserDetails(), ListAllProductTypes(),
    ModifyPendingOrderAddress(), ModifyPendingOrderItems(), ModifyPendingOrderPayment(), ModifyUserAddress(),
    ReturnDeliveredOrderItems(), TransferToHumanAgents(),
]

# One filled-in call per API for the agent's prompt (values unlike any record of the database).
API_EXAMPLES: list[dict[str, Any]] = [
    {"name": "find_user_id_by_email", "parameters": {"email": "jane.example@example.com"}},
    {"name": "find_user_id_by_name_zip", "parameters": {"first_name": "Jane", "last_name": "Example", "zip": "00000"}},
    {"name": "get_user_details", "parameters": {"user_id": "jane_example_0000"}},
    {"name": "get_order_details", "parameters": {"order_id": "#W0000000"}},
    {"name": "get_product_details", "parameters": {"product_id": "0000000000"}},
    {"name": "get_item_details", "parameters": {"item_id": "1111111111"}},
    {"name": "list_all_product_types", "parameters": {}},
    {"name": "calculate", "parameters": {"expression": "(10.5 + 2) * 3"}},
    {"name": "cancel_pending_order", "parameters": {"order_id": "#W0000000", "reason": "no longer needed"}},
    {"name": "modify_pending_order_address", "parameters": {
        "order_id": "#W0000000", "address1": "1 Example Road", "address2": "Apt 0", "city": "Exampletown",
        "state": "EX", "country": "USA", "zip": "00000"}},
    {"name": "modify_pending_order_items", "parameters": {
        "order_id": "#W0000000", "item_ids": ["1111111111"], "new_item_ids": ["2222222222"],
        "payment_method_id": "gift_card_0000000"}},
    {"name": "modify_pending_order_payment", "parameters": {"order_id": "#W0000000",
                                                            "payment_method_id": "credit_card_0000000"}},
    {"name": "modify_user_address", "parameters": {
        "user_id": "jane_example_0000", "address1": "1 Example Road", "address2": "", "city": "Exampletown",
        "state": "EX", "country": "USA", "zip": "00000"}},
    {"name": "exchange_delivered_order_items", "parameters": {
        "order_id": "#W0000000", "item_ids": ["1111111111"], "new_item_ids": ["2222222222"],
        "payment_method_id": "credit_card_0000000"}},
    {"name": "return_delivered_order_items", "parameters": {
        "order_id": "#W0000000", "item_ids": ["1111111111"], "payment_method_id": "gift_card_0000000"}},
    {"name": "transfer_to_human_agents", "parameters": {"summary": "The user wants to ... and I cannot help because ..."}},
]

"""Quill source -> syntax tree, by recursive descent; then the type checker in ``check.py``.

Grammar (one statement per line; a line may continue inside parentheses; '#' starts a comment):

    program    ::= statement (NEWLINE statement)*
    statement  ::= 'signal' NAME '=' expr
                 | 'filter' NAME '=' expr
                 | 'portfolio' KIND '(' expr (',' ('where' '=' expr | 'top' '=' NUMBER))* ')'
    expr       ::= and_expr ('or' and_expr)*
    and_expr   ::= not_expr ('and' not_expr)*
    not_expr   ::= 'not' not_expr | comparison
    comparison ::= sum (('>' | '>=' | '<' | '<=' | '==' | '!=') sum)?
    sum        ::= product (('+' | '-') product)*
    product    ::= unary (('*' | '/') unary)*
    unary      ::= '-' unary | primary
    primary    ::= NUMBER | NAME | NAME '(' [expr (',' expr)*] ')' | '(' expr ')'
"""

from __future__ import annotations

from weightsmith.domains.quill.check import check_program, expression_kind
from weightsmith.domains.quill.errors import QuillSyntaxError
from weightsmith.domains.quill.lexer import Token, tokenize
from weightsmith.domains.quill.nodes import Call, Expr, Filter, Num, Portfolio, Program, Ref, Signal
from weightsmith.domains.quill.ops import BINARY_SYMBOLS, OPS, PORTFOLIO_KINDS
from weightsmith.errors import UserError, closest

COMPARISONS = {"==", "!=", "<", "<=", ">", ">="}
MAX_NESTING = 48  # deep enough for any real signal, shallow enough for Python's stack


def parse(source: str) -> Program:
    """Parse and type-check a Quill program.

    Raises:
        QuillSyntaxError: with ``line:col`` and a caret, for syntax, name, arity, type and
            window errors.
    """
    if not isinstance(source, str):
        raise UserError(f"a Quill program must be text, got {type(source).__name__}.")
    program = _Parser(source).program()
    check_program(program, source)
    return program


class _Parser:
    def __init__(self, source: str):
        self.source = source
        self.tokens = tokenize(source)
        self.pos = 0
        self.nesting = 0

    # ---- token helpers -------------------------------------------------------------------

    def peek(self) -> Token:
        return self.tokens[self.pos]

    def advance(self) -> Token:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def at(self, text: str) -> bool:
        token = self.peek()
        return token.kind in ("op", "keyword") and token.text == text

    def error(self, message: str, token: Token | None = None, kind: str = "syntax") -> QuillSyntaxError:
        token = token or self.peek()
        return QuillSyntaxError(message, token.line, token.col, self.source, kind)

    def expect(self, text: str, context: str) -> Token:
        if not self.at(text):
            raise self.error(f"expected '{text}' {context}, found {self.peek().describe()}")
        return self.advance()

    def expect_name(self, what: str) -> Token:
        token = self.peek()
        if token.kind != "name":
            raise self.error(f"expected {what}, found {token.describe()}")
        return self.advance()

    def enter(self) -> None:
        self.nesting += 1
        if self.nesting > MAX_NESTING:
            raise self.error(f"expression nested more than {MAX_NESTING} levels deep; split it into signals")

    # ---- statements ------------------------------------------------------------------------

    def program(self) -> Program:
        statements = []
        while True:
            while self.peek().kind == "newline":
                self.advance()
            if self.peek().kind == "eof":
                break
            statements.append(self.statement())
            if self.peek().kind not in ("newline", "eof"):
                raise self.error(f"expected the end of the statement, found {self.peek().describe()}")
        if not statements:
            raise QuillSyntaxError(
                "empty program: write at least one statement, e.g. 'signal mom = rank(delta(close, 5))'",
                1, 1, self.source)
        return Program(tuple(statements))

    def statement(self):
        token = self.peek()
        if token.kind == "keyword" and token.text in ("signal", "filter"):
            self.advance()
            name = self.expect_name(f"a name after '{token.text}'")
            self.expect("=", f"after '{token.text} {name.text}'")
            expr = self.expr()
            node = Signal if token.text == "signal" else Filter
            return node(name.text, expr, token.line, token.col, name.col)
        if token.kind == "keyword" and token.text == "portfolio":
            return self.portfolio()
        hint = ""
        if token.kind == "name" and self.tokens[self.pos + 1].text == "=":
            hint = f" (write 'signal {token.text} = ...' or 'filter {token.text} = ...')"
        raise self.error(
            f"expected a statement starting with 'signal', 'filter' or 'portfolio', found {token.describe()}{hint}")

    def portfolio(self) -> Portfolio:
        start = self.advance()
        kind_token = self.expect_name("a portfolio kind (" + ", ".join(PORTFOLIO_KINDS) + ")")
        kind = PORTFOLIO_KINDS.get(kind_token.text)
        if kind is None:
            raise self.error(
                f"unknown portfolio kind '{kind_token.text}'{closest(kind_token.text, PORTFOLIO_KINDS)}; "
                f"use one of {', '.join(PORTFOLIO_KINDS)}", kind_token, "name")
        self.expect("(", f"after 'portfolio {kind.name}'")
        signal = self.expr()
        options: dict[str, Expr] = {}
        while self.at(","):
            self.advance()
            key = self.expect_name("an option 'where=' or 'top='")
            if key.text not in ("where", "top"):
                raise self.error(f"unknown portfolio option '{key.text}'{closest(key.text, ['where', 'top'])}; "
                                 "the options are where= and top=", key, "name")
            if key.text in options:
                raise self.error(f"option '{key.text}' given twice", key)
            self.expect("=", f"after '{key.text}'")
            options[key.text] = self.expr()
        self.expect(")", f"to close 'portfolio {kind.name}(' opened at {start.line}:{kind_token.col + len(kind.name)}")
        top = options.get("top")
        if top is not None:
            if not kind.uses_top:
                raise QuillSyntaxError(f"a '{kind.name}' portfolio takes no top=; remove it",
                                       top.line, top.col, self.source, "type")
            if not isinstance(top, Num) or not 0 < top.value <= kind.max_top:
                raise QuillSyntaxError(
                    f"top must be a number literal in (0, {kind.max_top:g}] for '{kind.name}', such as 0.2",
                    top.line, top.col, self.source, "type")
        return Portfolio(kind.name, signal, options.get("where"), top.value if top is not None else None,
                         start.line, start.col)

    # ---- expressions, loosest binding first -----------------------------------------------

    def expr(self) -> Expr:
        self.enter()
        left = self.and_expr()
        while self.at("or"):
            self.advance()
            left = Call("or", (left, self.and_expr()), left.line, left.col)
        self.nesting -= 1
        return left

    def and_expr(self) -> Expr:
        left = self.not_expr()
        while self.at("and"):
            self.advance()
            left = Call("and", (left, self.not_expr()), left.line, left.col)
        return left

    def not_expr(self) -> Expr:
        if self.at("not"):
            token = self.advance()
            self.enter()
            operand = self.not_expr()
            self.nesting -= 1
            return Call("not", (operand,), token.line, token.col)
        return self.comparison()

    def comparison(self) -> Expr:
        left = self.sum()
        if self.peek().kind == "op" and self.peek().text in COMPARISONS:
            symbol = self.advance().text
            left = Call(BINARY_SYMBOLS[symbol], (left, self.sum()), left.line, left.col)
            if self.peek().kind == "op" and self.peek().text in COMPARISONS:
                raise self.error("comparisons do not chain; write 'a < b and b < c'")
        return left

    def sum(self) -> Expr:
        left = self.product()
        while self.at("+") or self.at("-"):
            symbol = self.advance().text
            left = Call(BINARY_SYMBOLS[symbol], (left, self.product()), left.line, left.col)
        return left

    def product(self) -> Expr:
        left = self.unary()
        while self.at("*") or self.at("/"):
            symbol = self.advance().text
            left = Call(BINARY_SYMBOLS[symbol], (left, self.unary()), left.line, left.col)
        return left

    def unary(self) -> Expr:
        if self.at("-"):
            token = self.advance()
            self.enter()
            operand = self.unary()
            self.nesting -= 1
            if isinstance(operand, Num):
                # A negative literal stays a literal, so it can be a scalar argument: signed_power(x, -1).
                return Num(-operand.value, "-" + operand.text, token.line, token.col)
            return Call("neg", (operand,), token.line, token.col)
        return self.primary()

    def primary(self) -> Expr:
        token = self.peek()
        if token.kind == "number":
            self.advance()
            return Num(float(token.text), token.text, token.line, token.col)
        if token.kind == "name":
            self.advance()
            if self.at("("):
                return self.call(token)
            return Ref(token.text, token.line, token.col)
        if self.at("("):
            opened = self.advance()
            inner = self.expr()
            self.expect(")", f"to close '(' opened at {opened.line}:{opened.col}")
            return inner
        raise self.error(f"expected an expression, found {token.describe()}")

    def call(self, name: Token) -> Call:
        op = OPS.get(name.text)
        if op is not None and op.symbol:
            # 'add', 'gt', ... name the infix operators in the manual; in code they are symbols.
            raise self.error(f"'{name.text}' is written with its symbol: {op.signature}", name, "name")
        self.advance()  # '('
        self.enter()
        args: list[Expr] = []
        if not self.at(")"):
            args.append(self.expr())
            while self.at(","):
                self.advance()
                args.append(self.expr())
        if not self.at(")"):
            raise self.error(f"expected ',' or ')' in the arguments of '{name.text}', found {self.peek().describe()}")
        self.advance()
        self.nesting -= 1
        return Call(name.text, tuple(args), name.line, name.col)


def parse_expression(source: str, names: dict[str, str] | None = None) -> tuple[Expr, str]:
    """Parse and type-check one expression; return it with its kind ('series' or 'mask').

    Args:
        names: already-defined names and their kinds ('series' or 'mask').
    """
    parser = _Parser(source)
    expr = parser.expr()
    if parser.peek().kind not in ("newline", "eof") or parser.tokens[parser.pos + 1:-1]:
        token = parser.peek() if parser.peek().kind != "newline" else parser.tokens[parser.pos + 1]
        raise parser.error(f"expected the end of the expression, found {token.describe()}", token)
    kind = expression_kind(expr, source, names or {})
    return expr, "series" if kind == "number" else kind

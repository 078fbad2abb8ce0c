; Definitions for the workspace index: @name is the defined name, @definition.<kind> the whole definition.
(function_definition name: (identifier) @name) @definition.function
(class_definition name: (identifier) @name) @definition.class
(module (expression_statement (assignment left: (identifier) @name)) @definition.constant)
(module (expression_statement (assignment left: (pattern_list (identifier) @name))) @definition.constant)
